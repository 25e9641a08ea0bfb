//! Copying a fetched librdkafka message into a batch message (the reader thread's and the
//! preview's), reusing the buffers of a recycled message.

use ingest_core::batch::{KafkaPos, Message};

/// A batch message read from Kafka.
pub type KafkaMessage = Message<KafkaPos>;

/// A message to copy into (every field is overwritten by `copy_message`).
pub fn blank_message() -> KafkaMessage {
    Message { pos: KafkaPos { partition: 0, offset: 0 }, key: None, payload: None, timestamp_ms: None, headers: None }
}

/// Copies a fetched librdkafka message (not an error) into `out`, reusing its buffers (a recycled
/// message: every field is overwritten). Its headers are copied only when `headers` (a headers
/// metadata column or a transform uses them): a message may carry a megabyte of them.
///
/// # Safety
/// `m` must be a live message without an error, from the consumer queue.
pub unsafe fn copy_message(m: &rdkafka_sys::rd_kafka_message_t, out: &mut KafkaMessage, headers: bool) {
    let bytes = |ptr: *const std::ffi::c_void, len: usize| -> Option<&[u8]> {
        // SAFETY: librdkafka's payload, key and header value pointers cover `len` bytes while `m`
        // lives.
        (!ptr.is_null()).then(|| unsafe { std::slice::from_raw_parts(ptr.cast::<u8>(), len) })
    };
    out.pos = KafkaPos { partition: m.partition, offset: m.offset };
    ingest_core::batch::refill(&mut out.key, bytes(m.key, m.key_len));
    ingest_core::batch::refill(&mut out.payload, bytes(m.payload, m.len));
    let mut ts_type = rdkafka_sys::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
    // SAFETY (this and the header calls): `m` is live; librdkafka only reads it.
    let ts = unsafe { rdkafka_sys::rd_kafka_message_timestamp(m, &mut ts_type) };
    out.timestamp_ms = match ts_type {
        rdkafka_sys::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE => None,
        _ if ts == -1 => None,
        _ => Some(ts),
    };
    let mut hdrs: *mut rdkafka_sys::rd_kafka_headers_t = std::ptr::null_mut();
    out.headers = if headers
        && unsafe { rdkafka_sys::rd_kafka_message_headers(m, &mut hdrs) }
        == rdkafka_sys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
        && !hdrs.is_null()
    {
        let n = unsafe { rdkafka_sys::rd_kafka_header_cnt(hdrs) };
        let mut list = Vec::with_capacity(n);
        for i in 0..n {
            let mut name: *const std::ffi::c_char = std::ptr::null();
            let mut value: *const std::ffi::c_void = std::ptr::null();
            let mut size: usize = 0;
            let rc = unsafe { rdkafka_sys::rd_kafka_header_get_all(hdrs, i, &mut name, &mut value, &mut size) };
            if rc != rdkafka_sys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR || name.is_null() {
                break;
            }
            // SAFETY: a NUL-terminated header name owned by the message.
            let name = unsafe { std::ffi::CStr::from_ptr(name) }.to_string_lossy().into_owned();
            list.push((name, bytes(value, size).map(<[u8]>::to_vec)));
        }
        Some(list)
    } else {
        None
    };
}
