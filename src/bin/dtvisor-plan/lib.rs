//! The host tool's own code (`dtvisor-plan`): what only a host needs and
//! the hypervisor never runs. The U-Boot script interpreter behind the
//! pre-flight check, boot-script generation (`mkboot`) and the UEFI
//! system-partition check, over the hypervisor's portable library
//! (`dtvisor`: the same parser the image runs at boot).

extern crate alloc;

pub mod esp;
pub mod mkboot;
pub mod preflight;
pub mod uboot;
