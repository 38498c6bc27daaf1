//! The driver API generated from `proto/v1alpha1/service.proto`.

#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod v1alpha1 {
    tonic::include_proto!("v1alpha1");
}
