//! The engine's only door to UCX. This version asks the loaded libucp for its version (proof
//! at start-up that the library the engine links against is present and which one it is);
//! contexts, workers and endpoints come with the data plane.

/// Version of the libucp actually loaded at run time (the system's libucx0 when installed,
/// which may differ from the headers ucx1-sys was built with).
pub fn loaded_version() -> (u32, u32, u32) {
    let (mut major, mut minor, mut release) = (0, 0, 0);
    // Safety: ucp_get_version only writes the three integers it is given pointers to.
    unsafe { ucx1_sys::ucp_get_version(&mut major, &mut minor, &mut release) };
    (major, minor, release)
}

#[cfg(test)]
mod tests {
    #[test]
    fn libucp_loads_and_reports_a_version() {
        let (major, minor, _) = super::loaded_version();
        assert!(
            major >= 1 && minor > 0,
            "unexpected UCX version {major}.{minor}"
        );
    }
}
