//! Read JWTs, checked as SeaweedFS's volume server checks them before a GET
//! (`weed/server/volume_server_handlers.go` `maybeCheckJwtAuthorization`,
//! `weed/security/jwt.go` `DecodeJwt`):
//!
//! * the key is `[jwt.signing.read] key` of the volume server's `security.toml`; an empty or
//!   absent key means reads need no token (and a token sent anyway is ignored);
//! * the token is a JWS signed with an HMAC algorithm (HS256 is what SeaweedFS signs with;
//!   golang-jwt also accepts HS384/HS512 with the same key, so do we); any other algorithm,
//!   a bad signature or a token that does not parse is refused;
//! * `exp` and `nbf` are checked when present, with no leeway (golang-jwt v5's default); a
//!   token without `exp` never expires (SeaweedFS omits it when `expires_after_seconds` is 0);
//! * the `fid` claim must be the file id of the request, `"<volume>,<needle id><cookie>"` as
//!   SeaweedFS formats it (`needle.FileId.String`: lower-case hex, the needle id without
//!   leading zero bytes). The volume server compares it with the file id of the URL; the
//!   ring path has the numbers, so it compares with their canonical form (a client that
//!   requests by a non-canonical file id, or one with a `_<delta>` suffix, is answered the
//!   volume server's way only over HTTP; the Go client sends those reads there).

use std::path::{Path, PathBuf};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use ring_proto::ResultCode;

/// Why a read JWT was refused: the `READ_NEEDLE` answers -20..-23 (the volume server
/// answers all of them with 401 `{"error":"wrong jwt"}`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("the read needs a JWT and the request carries none")]
    Missing,
    #[error("the JWT does not verify with the read key: {0}")]
    Invalid(String),
    #[error("the JWT has expired")]
    Expired,
    #[error("the JWT is for file {claim:?}, not {want}")]
    WrongFile { claim: String, want: String },
}

impl JwtError {
    pub fn code(&self) -> ResultCode {
        match self {
            Self::Missing => ResultCode::JwtMissing,
            Self::Invalid(_) => ResultCode::JwtInvalid,
            Self::Expired => ResultCode::JwtExpired,
            Self::WrongFile { .. } => ResultCode::JwtWrongFile,
        }
    }
}

/// Why the read key cannot be loaded from `seaweedfs.security-toml` ([`LoadKeyError::fix`]
/// says what to do).
#[derive(Debug, thiserror::Error)]
pub enum LoadKeyError {
    #[error("{} cannot be read: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{} is not TOML: {why}", path.display())]
    Parse { path: PathBuf, why: String },
    #[error("{}: jwt.signing.read.key is not a string", path.display())]
    NotAString { path: PathBuf },
}

impl LoadKeyError {
    pub fn fix(&self) -> &'static str {
        match self {
            Self::Read { .. } => {
                "point seaweedfs.security-toml at the volume server's security.toml and let the engine's user read it"
            }
            Self::Parse { .. } => "fix the file (the volume server reads the same one)",
            Self::NotAString { .. } => "write it as key = \"...\" under [jwt.signing.read]",
        }
    }
}

/// Reads `[jwt.signing.read] key` of a SeaweedFS `security.toml` (as viper does: the table
/// path `jwt.signing.read`, key `key`). `None`: no read key (absent or empty), reads need
/// no token. (SeaweedFS also lets `WEED_JWT_SIGNING_READ_KEY` in the volume server's
/// environment override the file; the engine does not read that variable.)
pub fn load_read_key(path: &Path) -> Result<Option<Vec<u8>>, LoadKeyError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadKeyError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let doc: toml::Table = text.parse().map_err(|e: toml::de::Error| LoadKeyError::Parse {
        path: path.to_path_buf(),
        why: e.message().to_string(),
    })?;
    let key = doc
        .get("jwt")
        .and_then(|v| v.get("signing"))
        .and_then(|v| v.get("read"))
        .and_then(|v| v.get("key"));
    match key {
        None => Ok(None),
        Some(toml::Value::String(s)) if s.is_empty() => Ok(None),
        Some(toml::Value::String(s)) => Ok(Some(s.as_bytes().to_vec())),
        Some(_) => Err(LoadKeyError::NotAString {
            path: path.to_path_buf(),
        }),
    }
}

/// The file id SeaweedFS writes for needle `needle` with `cookie` in volume `volume`
/// (`needle.FileId.String`), e.g. `3,01637037d6`.
pub fn file_id(volume: u32, needle: u64, cookie: u32) -> String {
    let mut b = [0u8; 12];
    b[..8].copy_from_slice(&needle.to_be_bytes());
    b[8..].copy_from_slice(&cookie.to_be_bytes());
    let skip = b[..8].iter().take_while(|&&x| x == 0).count();
    let mut s = format!("{volume},");
    for x in &b[skip..] {
        s.push_str(&format!("{x:02x}"));
    }
    s
}

/// The claims SeaweedFS puts in a volume server token (`SeaweedFileIdClaims`); `exp`/`nbf`
/// are checked by the crate. A `fid` that is not a string fails to decode, as in Go.
#[derive(serde::Deserialize)]
struct FileIdClaims {
    #[serde(default)]
    fid: String,
}

/// Verifies read JWTs with one key.
pub struct ReadJwtVerifier {
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for ReadJwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReadJwtVerifier { key: <secret> }")
    }
}

impl ReadJwtVerifier {
    pub fn new(key: &[u8]) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        // golang-jwt's keyfunc in SeaweedFS accepts any HMAC method with the key.
        validation.algorithms = vec![Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];
        // golang-jwt v5 defaults: no required claims, no leeway, exp and nbf checked when
        // present, aud/iss/sub not checked.
        validation.required_spec_claims.clear();
        validation.leeway = 0;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = false;
        Self {
            key: DecodingKey::from_secret(key),
            validation,
        }
    }

    /// Checks `token` (as the client sent it; empty: none) for a read of needle `needle`
    /// with `cookie` in volume `volume`.
    pub fn verify(&self, token: &[u8], volume: u32, needle: u64, cookie: u32) -> Result<(), JwtError> {
        if token.is_empty() {
            return Err(JwtError::Missing);
        }
        let data =
            jsonwebtoken::decode::<FileIdClaims>(token, &self.key, &self.validation).map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => JwtError::Expired,
                _ => JwtError::Invalid(e.to_string()),
            })?;
        let want = file_id(volume, needle, cookie);
        if data.claims.fid != want {
            return Err(JwtError::WrongFile {
                claim: data.claims.fid,
                want,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    const KEY: &[u8] = b"read-key-for-tests";

    fn now() -> i64 {
        jsonwebtoken::get_current_timestamp() as i64
    }

    fn sign(alg: Algorithm, key: &[u8], claims: serde_json::Value) -> Vec<u8> {
        encode(&Header::new(alg), &claims, &EncodingKey::from_secret(key))
            .unwrap()
            .into_bytes()
    }

    #[test]
    fn file_ids_are_formatted_as_seaweedfs_does() {
        assert_eq!(file_id(3, 0x01, 0x6370_37d6), "3,01637037d6");
        assert_eq!(file_id(7, 0x1234_5678_9abc, 0x0000_0001), "7,123456789abc00000001");
        assert_eq!(file_id(1, 0, 0xdead_beef), "1,deadbeef");
        assert_eq!(
            file_id(u32::MAX, u64::MAX, 0),
            format!("{},ffffffffffffffff00000000", u32::MAX)
        );
    }

    #[test]
    fn a_token_signed_for_the_file_verifies() {
        let v = ReadJwtVerifier::new(KEY);
        let fid = file_id(3, 1, 0x6370_37d6);
        let with_exp = sign(Algorithm::HS256, KEY, json!({"fid": fid, "exp": now() + 60}));
        assert_eq!(v.verify(&with_exp, 3, 1, 0x6370_37d6), Ok(()));
        // SeaweedFS omits exp when expires_after_seconds is 0: such a token never expires.
        let without_exp = sign(Algorithm::HS256, KEY, json!({"fid": fid}));
        assert_eq!(v.verify(&without_exp, 3, 1, 0x6370_37d6), Ok(()));
        // golang-jwt accepts every HMAC method with the key; so do we.
        for alg in [Algorithm::HS384, Algorithm::HS512] {
            assert_eq!(
                v.verify(&sign(alg, KEY, json!({"fid": fid})), 3, 1, 0x6370_37d6),
                Ok(())
            );
        }
    }

    #[test]
    fn missing_expired_and_wrong_file_tokens_get_their_codes() {
        let v = ReadJwtVerifier::new(KEY);
        let fid = file_id(3, 1, 0x6370_37d6);
        assert_eq!(
            v.verify(b"", 3, 1, 0x6370_37d6).map_err(|e| e.code()),
            Err(ResultCode::JwtMissing)
        );
        let expired = sign(Algorithm::HS256, KEY, json!({"fid": fid, "exp": now() - 2}));
        assert_eq!(v.verify(&expired, 3, 1, 0x6370_37d6), Err(JwtError::Expired));
        let other = sign(Algorithm::HS256, KEY, json!({"fid": "3,02637037d6", "exp": now() + 60}));
        assert_eq!(
            v.verify(&other, 3, 1, 0x6370_37d6).map_err(|e| e.code()),
            Err(ResultCode::JwtWrongFile)
        );
        // Same needle, another cookie or volume: another file.
        let ok = sign(Algorithm::HS256, KEY, json!({"fid": fid}));
        assert_eq!(
            v.verify(&ok, 3, 1, 0x6370_37d7).map_err(|e| e.code()),
            Err(ResultCode::JwtWrongFile)
        );
        assert_eq!(
            v.verify(&ok, 4, 1, 0x6370_37d6).map_err(|e| e.code()),
            Err(ResultCode::JwtWrongFile)
        );
        // No fid claim at all: the claim is "" and names no file.
        let no_fid = sign(Algorithm::HS256, KEY, json!({"exp": now() + 60}));
        assert_eq!(
            v.verify(&no_fid, 3, 1, 0x6370_37d6).map_err(|e| e.code()),
            Err(ResultCode::JwtWrongFile)
        );
    }

    #[test]
    fn forged_and_malformed_tokens_are_invalid() {
        let v = ReadJwtVerifier::new(KEY);
        let fid = file_id(3, 1, 0x6370_37d6);
        let code = |t: &[u8]| v.verify(t, 3, 1, 0x6370_37d6).map_err(|e| e.code());
        // Signed with another key.
        assert_eq!(
            code(&sign(Algorithm::HS256, b"other", json!({"fid": fid}))),
            Err(ResultCode::JwtInvalid)
        );
        // Not valid yet.
        assert_eq!(
            code(&sign(Algorithm::HS256, KEY, json!({"fid": fid, "nbf": now() + 600}))),
            Err(ResultCode::JwtInvalid)
        );
        // alg none: header {"alg":"none","typ":"JWT"}, payload {"fid":"3,01637037d6"}, no
        // signature.
        let none = b"eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJmaWQiOiIzLDAxNjM3MDM3ZDYifQ.";
        assert_eq!(code(none), Err(ResultCode::JwtInvalid));
        // A fid that is not a string, garbage, a flipped signature byte, non-UTF-8 bytes.
        assert_eq!(
            code(&sign(Algorithm::HS256, KEY, json!({"fid": 3}))),
            Err(ResultCode::JwtInvalid)
        );
        assert_eq!(code(b"not a jwt"), Err(ResultCode::JwtInvalid));
        let mut t = sign(Algorithm::HS256, KEY, json!({"fid": fid}));
        let last = t.len() - 2;
        t[last] = if t[last] == b'A' { b'B' } else { b'A' };
        assert_eq!(code(&t), Err(ResultCode::JwtInvalid));
        assert_eq!(code(&[0xff, 0xfe, b'.', b'.']), Err(ResultCode::JwtInvalid));
    }

    #[test]
    fn the_read_key_comes_from_security_toml_as_viper_reads_it() {
        let dir = std::env::temp_dir().join(format!("swring-jwt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let write = |name: &str, body: &str| {
            let p = dir.join(name);
            std::fs::write(&p, body).unwrap();
            p
        };
        let full = write(
            "full.toml",
            "[jwt.signing]\nkey = \"write\"\n\n[jwt.signing.read]\nkey = \"r3ad\"\nexpires_after_seconds = 60\n",
        );
        assert_eq!(load_read_key(&full).unwrap(), Some(b"r3ad".to_vec()));
        let write_only = write("w.toml", "[jwt.signing]\nkey = \"write\"\n");
        assert_eq!(load_read_key(&write_only).unwrap(), None);
        let empty = write("e.toml", "[jwt.signing.read]\nkey = \"\"\n");
        assert_eq!(load_read_key(&empty).unwrap(), None);
        let number = write("n.toml", "[jwt.signing.read]\nkey = 5\n");
        assert!(load_read_key(&number)
            .unwrap_err()
            .to_string()
            .contains("jwt.signing.read.key is not a string"));
        let broken = write("b.toml", "[jwt.signing.read\n");
        assert!(load_read_key(&broken).unwrap_err().to_string().contains("is not TOML"));
        let missing = dir.join("absent.toml");
        let e = load_read_key(&missing).unwrap_err();
        assert!(e.to_string().contains("cannot be read") && e.fix().contains("seaweedfs.security-toml"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
