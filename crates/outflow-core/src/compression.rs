//! Compression applied to formatted bytes before they are written or sent.
//!
//! Whole-buffer ([`Compression::compress`]) and streaming ([`Compression::wrap_writer`])
//! forms produce the same format: a single gzip member or a single zstd frame. The streaming
//! encoder must be finished to write the trailer; [`CompressWriter::finish`] consumes it and
//! hands the inner writer back, and [`Compression::encode_to`] does it for the caller.

use std::io::{self, Read, Write};

/// Every compression name accepted in config.
pub const COMPRESSION_NAMES: &[&str] = &["none", "gzip", "zstd"];

/// The zstd level used everywhere: zstd's own default, a good speed/ratio balance for
/// job outputs.
const ZSTD_LEVEL: i32 = 3;

/// A compression codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// Bytes unchanged.
    #[default]
    None,
    /// gzip (RFC 1952).
    Gzip,
    /// Zstandard.
    Zstd,
}

impl Compression {
    /// Parses a name in any case.
    pub fn parse(name: &str) -> Option<Compression> {
        match name.to_ascii_lowercase().as_str() {
            "none" => Some(Compression::None),
            "gzip" => Some(Compression::Gzip),
            "zstd" => Some(Compression::Zstd),
            _ => None,
        }
    }

    /// The config name: `none`, `gzip` or `zstd`.
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }

    /// The file extension (without the dot) conventionally appended for this codec:
    /// `gz` or `zst`; `None` adds nothing.
    pub fn extension(self) -> Option<&'static str> {
        match self {
            Compression::None => None,
            Compression::Gzip => Some("gz"),
            Compression::Zstd => Some("zst"),
        }
    }

    /// The HTTP `Content-Encoding` value: `gzip` or `zstd`; `None` sends no header.
    pub fn content_encoding(self) -> Option<&'static str> {
        match self {
            Compression::None => None,
            Compression::Gzip => Some("gzip"),
            Compression::Zstd => Some("zstd"),
        }
    }

    /// Compresses a whole buffer. Writing into memory does not fail in practice; the error
    /// is the codec failing to set itself up (zstd allocating its context), passed on rather
    /// than turned into a panic.
    pub fn compress(self, data: &[u8]) -> io::Result<Vec<u8>> {
        if self == Compression::None {
            return Ok(data.to_vec());
        }
        self.encode_to(Vec::with_capacity(data.len() / 2 + 64), |w| w.write_all(data))
    }

    /// Decompresses a whole buffer produced by this codec (all gzip members or zstd frames).
    pub fn decompress(self, data: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        match self {
            Compression::None => out.extend_from_slice(data),
            Compression::Gzip => {
                flate2::read::MultiGzDecoder::new(data).read_to_end(&mut out)?;
            }
            Compression::Zstd => {
                zstd::stream::read::Decoder::new(data)?.read_to_end(&mut out)?;
            }
        }
        Ok(out)
    }

    /// Wraps `inner` in a streaming encoder. Call [`CompressWriter::finish`] when done: the
    /// gzip trailer and the end of the zstd frame are only written then.
    pub fn wrap_writer<W: Write>(self, inner: W) -> io::Result<CompressWriter<W>> {
        let state = match self {
            Compression::None => State::Plain(inner),
            Compression::Gzip => {
                State::Gzip(flate2::write::GzEncoder::new(inner, flate2::Compression::default()))
            }
            Compression::Zstd => State::Zstd(zstd::stream::write::Encoder::new(inner, ZSTD_LEVEL)?),
        };
        Ok(CompressWriter { state })
    }

    /// Streams into `inner` through an encoder: `write` writes the uncompressed bytes, then
    /// the encoder is finished and `inner` returned. The form that cannot forget to finish.
    pub fn encode_to<W: Write>(
        self,
        inner: W,
        write: impl FnOnce(&mut CompressWriter<W>) -> io::Result<()>,
    ) -> io::Result<W> {
        let mut writer = self.wrap_writer(inner)?;
        write(&mut writer)?;
        writer.finish()
    }
}

/// A streaming encoder over `W` (see [`Compression::wrap_writer`]).
///
/// Dropping it without [`finish`](CompressWriter::finish) leaves a truncated stream, which is
/// why it is `#[must_use]` and `finish` consumes it.
#[must_use = "call finish() to write the end of the compressed stream"]
pub struct CompressWriter<W: Write> {
    state: State<W>,
}

enum State<W: Write> {
    Plain(W),
    Gzip(flate2::write::GzEncoder<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write> CompressWriter<W> {
    /// Writes the end of the compressed stream, flushes, and returns the inner writer.
    pub fn finish(self) -> io::Result<W> {
        let mut inner = match self.state {
            State::Plain(w) => w,
            State::Gzip(e) => e.finish()?,
            State::Zstd(e) => e.finish()?,
        };
        inner.flush()?;
        Ok(inner)
    }

    /// The inner writer, e.g. to check how many compressed bytes went out so far.
    pub fn get_ref(&self) -> &W {
        match &self.state {
            State::Plain(w) => w,
            State::Gzip(e) => e.get_ref(),
            State::Zstd(e) => e.get_ref(),
        }
    }
}

impl<W: Write> Write for CompressWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.state {
            State::Plain(w) => w.write(buf),
            State::Gzip(e) => e.write(buf),
            State::Zstd(e) => e.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.state {
            State::Plain(w) => w.flush(),
            State::Gzip(e) => e.flush(),
            State::Zstd(e) => e.flush(),
        }
    }
}

impl<W: Write> std::fmt::Debug for CompressWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let codec = match self.state {
            State::Plain(_) => Compression::None,
            State::Gzip(_) => Compression::Gzip,
            State::Zstd(_) => Compression::Zstd,
        };
        f.debug_struct("CompressWriter").field("codec", &codec).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ALL: [Compression; 3] = [Compression::None, Compression::Gzip, Compression::Zstd];

    #[test]
    fn names_extensions_and_encodings() {
        let table = [
            (Compression::None, "none", None, None),
            (Compression::Gzip, "gzip", Some("gz"), Some("gzip")),
            (Compression::Zstd, "zstd", Some("zst"), Some("zstd")),
        ];
        for (c, name, ext, enc) in table {
            assert_eq!((c.name(), c.extension(), c.content_encoding()), (name, ext, enc));
            assert_eq!(Compression::parse(&name.to_uppercase()), Some(c));
        }
        assert_eq!(Compression::parse("brotli"), None);
        assert_eq!(COMPRESSION_NAMES, ALL.map(Compression::name));
    }

    #[test]
    fn outputs_carry_the_codec_magic_numbers() {
        let data = b"hello hello hello hello";
        assert_eq!(Compression::None.compress(data).unwrap(), data);
        assert_eq!(Compression::Gzip.compress(data).unwrap()[..2], [0x1f, 0x8b]);
        assert_eq!(Compression::Zstd.compress(data).unwrap()[..4], [0x28, 0xb5, 0x2f, 0xfd]);
        // Independent decoders, not our own decompress, read what we wrote.
        let mut out = String::new();
        flate2::read::GzDecoder::new(&Compression::Gzip.compress(data).unwrap()[..])
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out.as_bytes(), data);
        assert_eq!(zstd::decode_all(&Compression::Zstd.compress(data).unwrap()[..]).unwrap(), data);
    }

    #[test]
    fn repetitive_data_shrinks() {
        let data = vec![b'a'; 100_000];
        for c in [Compression::Gzip, Compression::Zstd] {
            assert!(c.compress(&data).unwrap().len() < 1_000, "{c:?}");
        }
    }

    #[test]
    fn garbage_does_not_decompress() {
        assert!(Compression::Gzip.decompress(b"not gzip").is_err());
        assert!(Compression::Zstd.decompress(b"not zstd").is_err());
        let truncated = &Compression::Gzip.compress(b"some data to cut").unwrap()[..10];
        assert!(Compression::Gzip.decompress(truncated).is_err());
    }

    #[test]
    fn unfinished_stream_is_truncated_and_finish_completes_it() {
        for c in [Compression::Gzip, Compression::Zstd] {
            let mut w = c.wrap_writer(Vec::new()).unwrap();
            w.write_all(b"payload").unwrap();
            w.flush().unwrap();
            let partial = w.get_ref().clone();
            assert!(c.decompress(&partial).is_err(), "{c:?}: a flushed stream is not complete");
            assert_eq!(c.decompress(&w.finish().unwrap()).unwrap(), b"payload");
        }
    }

    proptest! {
        #[test]
        fn round_trips(data in proptest::collection::vec(any::<u8>(), 0..4096)) {
            for c in ALL {
                prop_assert_eq!(c.decompress(&c.compress(&data).unwrap()).unwrap(), data.clone());
            }
        }

        #[test]
        fn streaming_in_chunks_matches_the_input(
            data in proptest::collection::vec(any::<u8>(), 0..4096),
            chunk in 1usize..700,
        ) {
            for c in ALL {
                let out = c
                    .encode_to(Vec::new(), |w| {
                        for piece in data.chunks(chunk) {
                            w.write_all(piece)?;
                        }
                        Ok(())
                    })
                    .unwrap();
                prop_assert_eq!(c.decompress(&out).unwrap(), data.clone());
            }
        }
    }
}
