//! UCX functions that return `ucs_status_t`, redeclared to return the raw `i8`.
//!
//! ucx1-sys maps `ucs_status_t` to a Rust enum generated from the UCX 1.12 headers. A newer
//! libucp (the system's, found first at run time) may return a code those headers do not
//! know, and a Rust enum holding an undeclared value is undefined behaviour. The C type is a
//! packed (one-byte, signed) enum, so these declarations have the same ABI; every status
//! goes through [`super::Status`] before anyone looks at it.

use std::os::raw::{c_char, c_int, c_void};

use ucx1_sys::*;

#[allow(non_camel_case_types)]
pub type raw_status = i8;

extern "C" {
    pub fn ucp_config_read(
        env_prefix: *const c_char,
        filename: *const c_char,
        config_p: *mut *mut ucp_config_t,
    ) -> raw_status;
    pub fn ucp_config_modify(config: *mut ucp_config_t, name: *const c_char, value: *const c_char) -> raw_status;
    pub fn ucp_init_version(
        api_major_version: u32,
        api_minor_version: u32,
        params: *const ucp_params_t,
        config: *const ucp_config_t,
        context_p: *mut ucp_context_h,
    ) -> raw_status;
    pub fn ucp_worker_create(
        context: ucp_context_h,
        params: *const ucp_worker_params_t,
        worker_p: *mut ucp_worker_h,
    ) -> raw_status;
    pub fn ucp_worker_get_efd(worker: ucp_worker_h, fd: *mut c_int) -> raw_status;
    pub fn ucp_worker_arm(worker: ucp_worker_h) -> raw_status;
    pub fn ucp_worker_set_am_recv_handler(worker: ucp_worker_h, param: *const ucp_am_handler_param_t) -> raw_status;
    pub fn ucp_listener_create(
        worker: ucp_worker_h,
        params: *const ucp_listener_params_t,
        listener_p: *mut ucp_listener_h,
    ) -> raw_status;
    pub fn ucp_listener_query(listener: ucp_listener_h, attr: *mut ucp_listener_attr_t) -> raw_status;
    pub fn ucp_ep_create(worker: ucp_worker_h, params: *const ucp_ep_params_t, ep_p: *mut ucp_ep_h) -> raw_status;
    pub fn ucp_request_check_status(request: *mut c_void) -> raw_status;
    pub fn ucp_mem_map(
        context: ucp_context_h,
        params: *const ucp_mem_map_params_t,
        memh_p: *mut ucp_mem_h,
    ) -> raw_status;
    pub fn ucp_mem_unmap(context: ucp_context_h, memh: ucp_mem_h) -> raw_status;
    pub fn ucp_rkey_pack(
        context: ucp_context_h,
        memh: ucp_mem_h,
        rkey_buffer_p: *mut *mut c_void,
        size_p: *mut size_t,
    ) -> raw_status;
    pub fn ucp_ep_rkey_unpack(ep: ucp_ep_h, rkey_buffer: *const c_void, rkey_p: *mut ucp_rkey_h) -> raw_status;
}

/// Callback shapes with the raw status, for passing our own functions to UCX (same ABI as
/// the ucx1-sys types, which name `ucs_status_t`).
pub type SendCallback = unsafe extern "C" fn(request: *mut c_void, status: raw_status, user_data: *mut c_void);
pub type RecvDataCallback =
    unsafe extern "C" fn(request: *mut c_void, status: raw_status, length: size_t, user_data: *mut c_void);
pub type ErrCallback = unsafe extern "C" fn(arg: *mut c_void, ep: ucp_ep_h, status: raw_status);
