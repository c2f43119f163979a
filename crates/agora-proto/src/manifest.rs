//! The job manifest (placeholder: being written).
pub struct Manifest;
#[derive(Debug)]
pub struct ManifestError;
