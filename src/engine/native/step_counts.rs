//! What a step costs the host, counted where it happens: uploads of host data to the device,
//! launches of entroll's own kernels, and full synchronisations. Each is a round of driver
//! calls that a GPU step pays whatever its batch, so a change that adds one per layer would
//! cost a decode step far more than its arithmetic; the scheduler's tests hold a decode step
//! to its budget on the CPU, where the same calls are made (the engine's loop runs on one
//! thread, so the counters are that thread's).

use std::cell::Cell;

thread_local! {
    static COUNTS: Cell<StepCounts> = const { Cell::new(StepCounts::ZERO) };
}

/// Counts since the thread started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StepCounts {
    /// Host-to-device copies of per-step data (indices, token ids, the rows' inputs).
    pub uploads: u64,
    /// Launches of entroll's own kernels (attention, cache writes, token statistics).
    pub launches: u64,
    /// Waits for the device to finish everything queued: a `synchronize`, or a read of results
    /// back to the host.
    pub syncs: u64,
}

impl StepCounts {
    const ZERO: Self = Self {
        uploads: 0,
        launches: 0,
        syncs: 0,
    };

    /// This thread's counts now.
    pub fn now() -> Self {
        COUNTS.with(Cell::get)
    }

    /// What happened between `earlier` and `self`.
    pub fn since(self, earlier: Self) -> Self {
        Self {
            uploads: self.uploads - earlier.uploads,
            launches: self.launches - earlier.launches,
            syncs: self.syncs - earlier.syncs,
        }
    }
}

fn bump(field: fn(&mut StepCounts) -> &mut u64) {
    COUNTS.with(|c| {
        let mut counts = c.get();
        *field(&mut counts) += 1;
        c.set(counts);
    });
}

/// Counts one upload.
pub fn upload() {
    bump(|c| &mut c.uploads);
}

/// Counts one launch.
pub fn launch() {
    bump(|c| &mut c.launches);
}

/// Counts one synchronisation.
pub fn sync() {
    bump(|c| &mut c.syncs);
}

/// Waits for everything queued on `device`, counted: the native engine's only way to wait for
/// the whole device (a test holds every other file of it to that).
pub fn synchronize(device: &candle_core::Device) -> candle_core::Result<()> {
    sync();
    device.synchronize()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_the_thread_s_own_and_a_synchronisation_is_one() {
        let before = StepCounts::now();
        synchronize(&candle_core::Device::Cpu).unwrap();
        upload();
        launch();
        launch();
        std::thread::spawn(upload).join().unwrap();
        let counted = StepCounts::now().since(before);
        assert_eq!(
            counted,
            StepCounts {
                uploads: 1,
                launches: 2,
                syncs: 1
            }
        );
    }

    /// A `synchronize()` written straight into the engine would wait for the device unseen by
    /// the counts (and by the decode step's budget in tests/fast/device_kernels.rs).
    #[test]
    fn the_engine_waits_for_the_device_only_through_this_module() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/engine/native");
        let mut read = 0;
        let mut folders = vec![dir.clone()];
        while let Some(folder) = folders.pop() {
            for entry in std::fs::read_dir(&folder).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    folders.push(path);
                    continue;
                }
                if path.file_name() == Some(std::ffi::OsStr::new("step_counts.rs")) {
                    continue;
                }
                let text = std::fs::read_to_string(&path).unwrap();
                read += 1;
                assert!(
                    !text.contains(".synchronize()"),
                    "{} waits for the device directly: use step_counts::synchronize",
                    path.display()
                );
            }
        }
        assert!(read > 10, "{read} files of {}", dir.display());
    }
}
