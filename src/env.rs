//! Signing keys from the environment, as QStash's official SDKs name them, multi-region mode
//! included: see [`Verifier::from_env`](crate::Verifier::from_env).

use crate::keys::{
    CURRENT_KEY_ENV, KeyError, NEXT_KEY_ENV, SigningKeys, region_env_prefix, required, trimmed,
};
use crate::keyset::{KNOWN_REGIONS, KeySet, Pair};

/// The environment variable that turns QStash's multi-region mode on: `EU_CENTRAL_1` or
/// `US_EAST_1` (the primary region; `eu-central-1` is read the same). Read by
/// [`Verifier::from_env`](crate::Verifier::from_env).
pub const REGION_ENV: &str = "QSTASH_REGION";

/// Reads a key set through `read` (a variable's value, `Ok(None)` when unset). See
/// [`Verifier::from_env`](crate::Verifier::from_env) for the rules.
pub(crate) fn load<R>(read: R) -> Result<KeySet, KeyError>
where
    R: Fn(&str) -> Result<Option<String>, KeyError>,
{
    let region = read(REGION_ENV)?;
    let region = region.as_deref().map(str::trim).filter(|r| !r.is_empty());
    let Some(region) = region else {
        // One region: exactly what `SigningKeys::from_env` reads, the same errors.
        let current = required(read(CURRENT_KEY_ENV)?, CURRENT_KEY_ENV.to_owned())?;
        let next = required(read(NEXT_KEY_ENV)?, NEXT_KEY_ENV.to_owned())?;
        let keys = SigningKeys::new(current, next)?;
        return Ok(KeySet::new(Some(Pair::new(keys)), Vec::new()));
    };
    let primary = region_env_prefix(region);
    if !KNOWN_REGIONS.contains(&primary.as_str()) {
        return Err(KeyError::UnknownRegion {
            value: crate::error::bounded(region, 64),
        });
    }
    let mut regions = Vec::new();
    for name in KNOWN_REGIONS {
        if let Some(keys) = pair(&read, Some(name))? {
            regions.push((name.to_owned(), Pair::new(keys)));
        }
    }
    let default = pair(&read, None)?.map(Pair::new);
    if regions.is_empty() && default.is_none() {
        return Err(KeyError::NoKeys);
    }
    let names: Vec<&str> = regions.iter().map(|(name, _)| name.as_str()).collect();
    if regions.is_empty() {
        tracing::warn!(
            "qstash: QSTASH_REGION is set but no region has signing keys: every delivery is \
             verified with the default signing keys"
        );
    } else {
        tracing::info!(
            primary = primary.as_str(),
            regions = names.join(",").as_str(),
            default_keys = default.is_some(),
            "qstash: multi-region signing keys loaded"
        );
    }
    Ok(KeySet::new(default, regions))
}

/// The pair with `prefix` (`None`: the unprefixed one): `Ok(None)` when neither variable is
/// set, an error when only one is, or one is empty.
fn pair<R>(read: &R, prefix: Option<&str>) -> Result<Option<SigningKeys>, KeyError>
where
    R: Fn(&str) -> Result<Option<String>, KeyError>,
{
    let name = |var: &str| match prefix {
        Some(prefix) => format!("{prefix}_{var}"),
        None => var.to_owned(),
    };
    let (current_var, next_var) = (name(CURRENT_KEY_ENV), name(NEXT_KEY_ENV));
    let current = trimmed(read(&current_var)?, &current_var)?;
    let next = trimmed(read(&next_var)?, &next_var)?;
    match (current, next) {
        (None, None) => Ok(None),
        (Some(current), Some(next)) => SigningKeys::new(current, next).map(Some),
        (Some(_), None) => Err(KeyError::IncompletePair {
            present: current_var,
            missing: next_var,
        }),
        (None, Some(_)) => Err(KeyError::IncompletePair {
            present: next_var,
            missing: current_var,
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::Verifier;

    const EU: [(&str, &str); 2] = [
        ("EU_CENTRAL_1_QSTASH_CURRENT_SIGNING_KEY", "sig_eu1"),
        ("EU_CENTRAL_1_QSTASH_NEXT_SIGNING_KEY", "sig_eu2"),
    ];
    const US: [(&str, &str); 2] = [
        ("US_EAST_1_QSTASH_CURRENT_SIGNING_KEY", "sig_us1"),
        ("US_EAST_1_QSTASH_NEXT_SIGNING_KEY", "sig_us2"),
    ];
    const DEFAULT: [(&str, &str); 2] = [
        ("QSTASH_CURRENT_SIGNING_KEY", "sig_d1"),
        ("QSTASH_NEXT_SIGNING_KEY", "sig_d2"),
    ];

    fn from(vars: &[(&str, &str)]) -> Result<Verifier, KeyError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Verifier::from_vars(|name| map.get(name).cloned())
    }

    fn regions(verifier: &Verifier) -> String {
        let debug = format!("{verifier:?}");
        debug
            .split("regions: ")
            .nth(1)
            .and_then(|rest| rest.split(']').next())
            .unwrap_or_default()
            .to_owned()
    }

    #[test]
    fn without_region_reads_the_unprefixed_pair_with_from_envs_errors() {
        assert!(from(&DEFAULT).is_ok());
        // Region keys are ignored without QSTASH_REGION.
        let v = from(&[DEFAULT.as_slice(), &EU].concat()).unwrap();
        assert_eq!(regions(&v), "[");
        assert_eq!(
            from(&EU).unwrap_err(),
            KeyError::MissingEnv {
                var: "QSTASH_CURRENT_SIGNING_KEY".into()
            }
        );
        assert_eq!(
            from(&[("QSTASH_CURRENT_SIGNING_KEY", "sig_d1")]).unwrap_err(),
            KeyError::MissingEnv {
                var: "QSTASH_NEXT_SIGNING_KEY".into()
            }
        );
        assert_eq!(
            from(&[
                ("QSTASH_CURRENT_SIGNING_KEY", " \n"),
                ("QSTASH_NEXT_SIGNING_KEY", "sig_d2")
            ])
            .unwrap_err(),
            KeyError::EmptyEnv {
                var: "QSTASH_CURRENT_SIGNING_KEY".into()
            }
        );
        // An empty QSTASH_REGION is no region, as in the official SDK.
        assert!(from(&[DEFAULT.as_slice(), &[("QSTASH_REGION", " ")]].concat()).is_ok());
    }

    #[test]
    fn with_region_loads_every_region_and_the_default_pair() {
        let v = from(&[&[("QSTASH_REGION", "EU_CENTRAL_1")], EU.as_slice(), &US].concat()).unwrap();
        assert_eq!(regions(&v), "[\"EU_CENTRAL_1\", \"US_EAST_1\"");
        assert!(format!("{v:?}").contains("keys: None"), "{v:?}");
        let v =
            from(&[&[("QSTASH_REGION", "us-east-1")], US.as_slice(), &DEFAULT].concat()).unwrap();
        assert_eq!(regions(&v), "[\"US_EAST_1\"");
        assert!(format!("{v:?}").contains("keys: Some"), "{v:?}");
        // Only the default pair: a valid (if pointless) configuration.
        assert!(from(&[&[("QSTASH_REGION", "US_EAST_1")], DEFAULT.as_slice()].concat()).is_ok());
    }

    #[test]
    fn misconfigurations_are_errors_at_start_up() {
        assert_eq!(
            from(&[&[("QSTASH_REGION", "AP_SOUTH_1")], EU.as_slice()].concat()).unwrap_err(),
            KeyError::UnknownRegion {
                value: "AP_SOUTH_1".into()
            }
        );
        assert_eq!(
            from(&[("QSTASH_REGION", "EU_CENTRAL_1")]).unwrap_err(),
            KeyError::NoKeys
        );
        assert_eq!(
            from(&[
                ("QSTASH_REGION", "EU_CENTRAL_1"),
                ("EU_CENTRAL_1_QSTASH_CURRENT_SIGNING_KEY", "sig_eu1"),
                ("QSTASH_CURRENT_SIGNING_KEY", "sig_d1"),
                ("QSTASH_NEXT_SIGNING_KEY", "sig_d2"),
            ])
            .unwrap_err(),
            KeyError::IncompletePair {
                present: "EU_CENTRAL_1_QSTASH_CURRENT_SIGNING_KEY".into(),
                missing: "EU_CENTRAL_1_QSTASH_NEXT_SIGNING_KEY".into(),
            }
        );
        assert_eq!(
            from(&[
                ("QSTASH_REGION", "EU_CENTRAL_1"),
                ("QSTASH_NEXT_SIGNING_KEY", "sig_d2"),
                EU[0],
                EU[1],
            ])
            .unwrap_err(),
            KeyError::IncompletePair {
                present: "QSTASH_NEXT_SIGNING_KEY".into(),
                missing: "QSTASH_CURRENT_SIGNING_KEY".into(),
            }
        );
        assert_eq!(
            from(&[
                ("QSTASH_REGION", "EU_CENTRAL_1"),
                ("US_EAST_1_QSTASH_CURRENT_SIGNING_KEY", ""),
                ("US_EAST_1_QSTASH_NEXT_SIGNING_KEY", "sig_us2"),
                EU[0],
                EU[1],
            ])
            .unwrap_err(),
            KeyError::EmptyEnv {
                var: "US_EAST_1_QSTASH_CURRENT_SIGNING_KEY".into()
            }
        );
    }

    #[test]
    fn errors_name_variables_never_keys() {
        let long = "x".repeat(500);
        let err = from(&[("QSTASH_REGION", long.as_str())]).unwrap_err();
        assert!(err.to_string().len() < 200, "{err}");
        let err = from(&[
            ("QSTASH_REGION", "EU_CENTRAL_1"),
            ("EU_CENTRAL_1_QSTASH_CURRENT_SIGNING_KEY", "sig_secret"),
        ])
        .unwrap_err();
        assert!(!err.to_string().contains("sig_secret"), "{err}");
    }
}
