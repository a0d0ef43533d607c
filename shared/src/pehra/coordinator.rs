//! The PEHRA elector (see the module docs of [`super`]).
