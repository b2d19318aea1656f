//! The PBX the modules act on: the directory model (users, groups, numbers,
//! forwards, address book), a fast immutable routing index over it, and
//! SQLite persistence for the directory and the per-user call lists, and the
//! call engine every front end (simulator, SIP) drives.

pub mod directory;
pub mod engine;
pub mod store;

pub use callhost_numbers::{ExternalNumber, NumberError, NumberPlan};
pub use callhost_seal::{Place, SealError, Sealer};
pub use directory::{
    is_internal_number, Contact, Directory, DirectoryError, DirectoryIndex, Group, Resolved,
    Secret, User, UserState,
};
pub use store::{
    migrate, migrate_steps, rfc3339_utc, schema_version, CallDirection, CallListEntry, Step, Store,
    StoreError,
};
