//! S3 access keys: the pairs in the gateway config. An unknown access key answers
//! `InvalidAccessKeyId`, as AWS does.

use std::collections::HashMap;

use s3s::auth::{S3Auth, SecretKey};
use s3s::{s3_error, S3Result};

use super::S3Key;

/// The gateway's S3 keys, by access key id.
pub struct Keys(HashMap<String, String>);

impl Keys {
    /// The keys of the config.
    pub fn new(keys: &[S3Key]) -> Self {
        Self(
            keys.iter()
                .map(|k| (k.access_key.clone(), k.secret_key.expose().to_string()))
                .collect(),
        )
    }
}

#[async_trait::async_trait]
impl S3Auth for Keys {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        match self.0.get(access_key) {
            Some(secret) => Ok(SecretKey::from(secret.as_str())),
            None => Err(s3_error!(
                InvalidAccessKeyId,
                "The AWS Access Key Id you provided does not exist in our records."
            )),
        }
    }
}
