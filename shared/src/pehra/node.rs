//! One PEHRA participant (see the module docs of [`super`]).
