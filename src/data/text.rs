//! Reading the text files of the loaders: UTF-8 with a leading byte-order mark dropped (it is
//! not part of the first field), invalid UTF-8 reported by line, and the rule that a file of
//! lines ends with a newline: a last line without one is how a copy cut short looks, and
//! reading it would silently keep a partial user or row.

use std::path::Path;

use super::error::{DataError, Result};

/// The UTF-8 byte-order mark some editors put at the start of a file.
const BOM: &str = "\u{feff}";

/// Decodes `bytes` (the content of `path`) as UTF-8, without a leading byte-order mark.
pub fn decode_utf8(path: &Path, bytes: Vec<u8>) -> Result<String> {
    match String::from_utf8(bytes) {
        Ok(text) => Ok(match text.strip_prefix(BOM) {
            Some(rest) => rest.to_owned(),
            None => text,
        }),
        Err(e) => {
            let at = e.utf8_error().valid_up_to();
            let line = 1 + e.as_bytes()[..at].iter().filter(|&&b| b == b'\n').count();
            Err(DataError::invalid(
                path,
                format!("line {line}: not UTF-8 text (invalid byte at offset {at})"),
            ))
        }
    }
}

/// Reads a text file (see [`decode_utf8`]).
pub fn read_text(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    decode_utf8(path, bytes)
}

/// Refuses a non-empty text whose last line has no newline (see the module doc).
pub fn check_final_newline(path: &Path, text: &str) -> Result<()> {
    if text.is_empty() || text.ends_with('\n') {
        return Ok(());
    }
    let line = text.lines().count();
    Err(DataError::invalid(
        path,
        format!(
            "line {line}, the last, does not end with a newline: the file looks cut short \
             (if it is complete, add a newline at its end)"
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bom_is_dropped_and_bad_bytes_name_the_line() {
        let p = Path::new("f.txt");
        let text = decode_utf8(p, b"\xef\xbb\xbfuser 1|2\n".to_vec()).unwrap();
        assert_eq!(text, "user 1|2\n");
        let e = decode_utf8(p, b"a\nb\n\xff\n".to_vec()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "f.txt: line 3: not UTF-8 text (invalid byte at offset 4)"
        );
    }

    #[test]
    fn a_last_line_without_newline_is_refused() {
        let p = Path::new("f.txt");
        assert!(check_final_newline(p, "").is_ok());
        assert!(check_final_newline(p, "a\nb\n").is_ok());
        let e = check_final_newline(p, "a\nb").unwrap_err().to_string();
        assert!(
            e.contains("line 2, the last, does not end with a newline"),
            "{e}"
        );
    }
}
