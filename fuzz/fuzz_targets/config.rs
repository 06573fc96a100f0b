//! Arbitrary text as a configuration file: the loader must answer with a config or an error,
//! never a panic; an error is one line.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Ok(text) = std::str::from_utf8(input) else {
        return;
    };
    if let Err(e) = netsonde::config::Config::from_yaml(text) {
        let message = e.to_string();
        assert!(!message.contains('\n'), "an error of more than one line: {message}");
    }
});
