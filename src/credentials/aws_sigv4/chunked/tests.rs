use super::*;

/// AWS's worked example of a chunked upload: 66,560 bytes of `a` in chunks of 64 KiB, 1 KiB and
/// the final empty one, with the seed signature of its headers.
const SEED: &str = "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9";
const EXPECTED: [&str; 3] = [
    "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648",
    "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497",
    "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9",
];

fn signer() -> ChunkSigner {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_369_353_600);
    let key = aws_sigv4::sign::v4::generate_signing_key(
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        time,
        "us-east-1",
        "s3",
    );
    ChunkSigner::new(key.as_ref(), "20130524T000000Z", "us-east-1", "s3", SEED)
}

/// The example's body as a client signed it with some other key.
fn client_body() -> Vec<u8> {
    let bad = "0".repeat(64);
    let mut b = Vec::new();
    for (size, n) in [("10000", 65536), ("400", 1024), ("0", 0)] {
        b.extend_from_slice(format!("{size};chunk-signature={bad}\r\n").as_bytes());
        b.extend(std::iter::repeat_n(b'a', n));
        b.extend_from_slice(b"\r\n");
    }
    b
}

fn resign(pieces: &[&[u8]]) -> Result<Vec<u8>, ChunkError> {
    let mut r = Resigner::new(signer(), 1 << 20);
    let mut out = Vec::new();
    for (i, p) in pieces.iter().enumerate() {
        if let Some(b) = r.feed(Some(p), i + 1 == pieces.len())? {
            out.extend_from_slice(&b);
        }
    }
    Ok(out)
}

fn signatures(body: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(body);
    text.split("chunk-signature=")
        .skip(1)
        .map(|s| s[..64].to_string())
        .collect()
}

#[test]
fn aws_example_chunk_signatures() {
    let body = client_body();
    let out = resign(&[&body]).unwrap();
    assert_eq!(signatures(&out), EXPECTED);
    assert_eq!(out.len(), body.len(), "the length the client declared stays true");
}

#[test]
fn any_split_of_the_stream_gives_the_same_body() {
    let body = client_body();
    let whole = resign(&[&body]).unwrap();
    for cut in [0, 1, 5, 30, 86, 87, 88, 65_000, 65_623, 65_624, 65_625, 66_700, body.len() - 1] {
        let (a, b) = body.split_at(cut);
        assert_eq!(resign(&[a, b]).unwrap(), whole, "cut at {cut}");
    }
    let bytes: Vec<&[u8]> = body.chunks(777).collect();
    assert_eq!(resign(&bytes).unwrap(), whole);
}

#[test]
fn memory_is_one_chunk_at_a_time() {
    let body = client_body();
    let mut r = Resigner::new(signer(), 1 << 20);
    let mut held = 0;
    for piece in body.chunks(4096) {
        let _ = r.feed(Some(piece), false);
        held = held.max(r.pending.len());
    }
    assert!(held <= 65_536 + 128, "held {held} bytes");
}

#[test]
fn malformed_streams_are_errors_not_guesses() {
    let body = client_body();
    assert_eq!(resign(&[&body[..1000]]), Err(ChunkError::Truncated));
    let mut extra = body.clone();
    extra.extend_from_slice(b"junk");
    assert_eq!(resign(&[&extra]), Err(ChunkError::Trailing));
    let short_sig = b"3;chunk-signature=abc\r\nxyz\r\n".to_vec();
    assert_eq!(resign(&[&short_sig]), Err(ChunkError::Header));
    let bad_crlf = format!("3;chunk-signature={}\r\nxyzXX", "0".repeat(64));
    assert_eq!(resign(&[bad_crlf.as_bytes()]), Err(ChunkError::Framing));
    let mut r = Resigner::new(signer(), 10);
    let big = format!("ff;chunk-signature={}\r\n", "0".repeat(64));
    assert_eq!(r.feed(Some(big.as_bytes()), false), Err(ChunkError::TooLarge(255, 10)));
    assert_eq!(resign(&[&[b'x'; 200]]), Err(ChunkError::Header));
}
