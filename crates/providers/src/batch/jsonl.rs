//! Reading a JSONL body as it arrives: results files run to hundreds of megabytes, so lines are
//! handed out one by one instead of buffering the body. Parsed whatever the content type says
//! (Anthropic sent none until mid-2026); blank lines and `\r\n` endings are tolerated.

use std::time::Duration;

use futures::StreamExt;
use sluice_core::config::ProviderKind;

use crate::error::{ErrorKind, ProviderError, TimeoutPhase};

/// Splits bytes into lines across arbitrary chunk boundaries.
#[derive(Debug, Default)]
pub(crate) struct LineSplitter {
    partial: Vec<u8>,
}

fn emit(line: &[u8], f: &mut impl FnMut(&[u8])) {
    let line = line.trim_ascii();
    if !line.is_empty() {
        f(line);
    }
}

impl LineSplitter {
    pub fn push(&mut self, mut chunk: &[u8], f: &mut impl FnMut(&[u8])) {
        while let Some(nl) = chunk.iter().position(|b| *b == b'\n') {
            let (line, rest) = chunk.split_at(nl);
            if self.partial.is_empty() {
                emit(line, f);
            } else {
                self.partial.extend_from_slice(line);
                emit(&self.partial, f);
                self.partial.clear();
            }
            chunk = rest.get(1..).unwrap_or_default();
        }
        self.partial.extend_from_slice(chunk);
    }

    /// The last line, when the body does not end with a newline.
    pub fn finish(&mut self, f: &mut impl FnMut(&[u8])) {
        let rest = std::mem::take(&mut self.partial);
        emit(&rest, f);
    }
}

/// Feeds every non-blank line of `resp` to `f`. A body that goes silent for `idle` is a
/// timeout; one that breaks is a (retryable) cut.
pub(crate) async fn for_each_line(
    kind: ProviderKind,
    resp: reqwest::Response,
    idle: Duration,
    mut f: impl FnMut(&[u8]),
) -> Result<(), ProviderError> {
    let mut body = resp.bytes_stream();
    let mut split = LineSplitter::default();
    loop {
        match tokio::time::timeout(idle, body.next()).await {
            Err(_) => {
                return Err(ProviderError::new(
                    kind,
                    ErrorKind::Timeout(TimeoutPhase::Idle),
                    "the results download went silent",
                ));
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => return Err(ProviderError::transport(kind, e, true)),
            Ok(Some(Ok(chunk))) => split.push(&chunk, &mut f),
        }
    }
    split.finish(&mut f);
    Ok(())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn lines_of(chunks: &[&[u8]]) -> Vec<String> {
        let mut out = Vec::new();
        let mut s = LineSplitter::default();
        let mut f = |l: &[u8]| out.push(String::from_utf8_lossy(l).into_owned());
        for c in chunks {
            s.push(c, &mut f);
        }
        s.finish(&mut f);
        out
    }

    #[test]
    fn blank_lines_and_crlf() {
        assert_eq!(lines_of(&[b"{\"a\":1}\r\n\n  \n{\"b\":2}"]), vec!["{\"a\":1}", "{\"b\":2}"]);
        assert_eq!(lines_of(&[b"x\n"]), vec!["x"]);
        assert!(lines_of(&[b"\n\n"]).is_empty());
    }

    proptest! {
        #[test]
        fn any_chunking_gives_the_same_lines(
            lines in prop::collection::vec("[a-z{}:\" ]{0,12}", 0..20),
            cuts in prop::collection::vec(0usize..200, 0..10),
        ) {
            let text = lines.join("\n");
            let bytes = text.as_bytes();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(bytes.len())).collect();
            cuts.sort_unstable();
            let mut chunks: Vec<&[u8]> = Vec::new();
            let mut at = 0;
            for c in cuts {
                chunks.push(&bytes[at..c]);
                at = c;
            }
            chunks.push(&bytes[at..]);
            let whole = lines_of(&[bytes]);
            prop_assert_eq!(lines_of(&chunks), whole.clone());
            let expected: Vec<String> =
                lines.iter().map(|l| l.trim().to_owned()).filter(|l| !l.is_empty()).collect();
            prop_assert_eq!(whole, expected);
        }
    }
}
