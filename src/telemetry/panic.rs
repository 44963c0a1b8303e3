//! Panics turned into messages: the engines and the HTTP layer catch panics so that one
//! request's bug fails only that request, and both report what the panic said.

/// The message a panic carried, for logs and error answers.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic")
}
