//! Where the windowed flows keep their state (`state:` in the spec): [`StateSpec`] is
//! what the generated `main` says, [`StateEnv`] what the driver opens from it for the
//! generated `Job::open` (a RocksDB instance per job instance with feature `rocksdb`).

use super::Error;
use crate::state::StateError;

/// The spec's `state:` block, as the generated `main` hands it to [`super::main_with`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StateSpec {
    /// State in memory (the default).
    Memory,
    /// State in RocksDB under `path` (absolute), in `<path>/<job>/<instance>/db`, one
    /// column family per operator (windowed flow) named here.
    RocksDb {
        /// The state directory.
        path: &'static str,
        /// The windowed flows.
        operators: Vec<&'static str>,
    },
}

/// The opened state backend, for the pipeline's constructor.
#[derive(Debug, Default)]
pub struct StateEnv {
    #[cfg(feature = "rocksdb")]
    rocks: Option<std::rc::Rc<crate::state::RocksDb>>,
}

impl StateEnv {
    /// Memory state: nothing to open.
    pub fn memory() -> Self {
        StateEnv::default()
    }

    /// Opens what `spec` says for instance `instance` of job `job` (RocksDB: the
    /// directory wiped, a restore rebuilds it from the checkpoint).
    pub fn open(spec: &StateSpec, job: &str, instance: &str) -> Result<Self, Error> {
        match spec {
            StateSpec::Memory => Ok(StateEnv::memory()),
            #[cfg(feature = "rocksdb")]
            StateSpec::RocksDb { path, operators } => {
                let dir = std::path::Path::new(path)
                    .join(job)
                    .join(instance)
                    .join("db");
                let db = crate::state::RocksDb::open(&dir, operators).map_err(Error::State)?;
                tracing::info!(dir = %dir.display(), "RocksDB state");
                Ok(StateEnv { rocks: Some(db) })
            }
            #[cfg(not(feature = "rocksdb"))]
            StateSpec::RocksDb { .. } => {
                let _ = (job, instance);
                Err(Error::State(StateError::new(
                    "this binary was built without the RocksDB state backend (runtime feature `rocksdb`)",
                )))
            }
        }
    }

    /// The RocksDB backend of `operator` (a windowed flow), tracking changes for
    /// incremental checkpoints when `tracking`.
    #[cfg(feature = "rocksdb")]
    pub fn rocksdb(
        &self,
        operator: &str,
        tracking: bool,
    ) -> Result<crate::state::Rocks, StateError> {
        match &self.rocks {
            Some(db) => db.backend(operator, tracking),
            None => Err(StateError::new(format!(
                "operator `{operator}` asks for RocksDB state, but the job's state is in memory"
            ))),
        }
    }

    /// The RocksDB instance, if the state is there.
    #[cfg(feature = "rocksdb")]
    pub fn rocks(&self) -> Option<&std::rc::Rc<crate::state::RocksDb>> {
        self.rocks.as_ref()
    }

    /// Fails with the first error the state backend met (RocksDB I/O), if any: the
    /// driver checks after every batch, before anything is flushed or committed.
    pub fn check(&self) -> Result<(), Error> {
        #[cfg(feature = "rocksdb")]
        if let Some(e) = self.rocks.as_ref().and_then(|db| db.error()) {
            return Err(Error::State(StateError::new(e)));
        }
        Ok(())
    }
}
