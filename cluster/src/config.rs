//! Config files. Every setting has one name used three ways: `snake_case` in the TOML
//! file, `KURA_SNAKE_CASE` in the environment, `--kebab-case` as a flag. Flags beat the
//! environment, which beats the file, which beats the built-in default.

use std::path::Path;

use serde::de::DeserializeOwned;

use crate::Error;

/// Reads a TOML config file into `T`; unknown keys are errors (a typo must not silently
/// fall back to a default). A missing path yields `T::default()`.
pub fn load_toml<T: DeserializeOwned + Default>(path: Option<&Path>) -> Result<T, Error> {
    let Some(path) = path else {
        return Ok(T::default());
    };
    let err = |why: String| Error::Config {
        path: path.display().to_string(),
        why,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    toml::from_str(&text).map_err(|e| err(e.to_string()))
}
