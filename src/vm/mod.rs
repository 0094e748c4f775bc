//! Building a domain: the guest-physical map, the kernel's Image header,
//! the guest DTB.
pub mod build;
pub mod guest_dtb;
pub mod image;
pub mod lifecycle;
pub mod load;
pub mod ratelimit;
