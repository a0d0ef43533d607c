//! The sticky failure of a store.

/// Whether a store is still usable. After a write or sync fails, what reached the disk is
/// unknown (a failed fsync may have dropped dirty pages), so the store refuses all further
/// work until it is reopened, which recovers to the last valid record.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Poison {
    poisoned: bool,
}

impl Poison {
    /// Whether an earlier failure poisoned the store.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    /// `Ok` while usable, else the error `refusal` makes.
    pub fn check<E>(&self, refusal: impl FnOnce() -> E) -> Result<(), E> {
        if self.poisoned {
            Err(refusal())
        } else {
            Ok(())
        }
    }

    /// Passes `result` on, poisoning the store if it is an error.
    pub fn on_error<T, E>(&mut self, result: Result<T, E>) -> Result<T, E> {
        if result.is_err() {
            self.poisoned = true;
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::Poison;

    #[test]
    fn a_failure_poisons_for_good_and_a_success_does_not() {
        let mut poison = Poison::default();
        assert_eq!(poison.on_error(Ok::<u8, &str>(1)), Ok(1));
        assert_eq!(poison.check(|| "refused"), Ok(()));
        assert_eq!(poison.on_error(Err::<u8, &str>("disk")), Err("disk"));
        assert!(poison.is_poisoned());
        assert_eq!(poison.on_error(Ok::<u8, &str>(2)), Ok(2));
        assert_eq!(poison.check(|| "refused"), Err("refused"));
    }
}
