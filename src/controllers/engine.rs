//! The engine an object asked for, and what its spec asks of that engine: every controller asks here
//! before it acts, and refuses what the engine cannot do with one reason, `EngineUnsupported`.

use crate::{
    api::database_environment::{DatabaseEnvironmentSpec, Engine},
    engines::{Capability, Kind, Unsupported},
};

use super::Error;

/// The engine `spec.engine` names.
pub fn kind(engine: Engine) -> Kind {
    match engine {
        Engine::Postgres => Kind::Postgres,
        Engine::Redis => Kind::Redis,
        Engine::MongoDb => Kind::MongoDb,
    }
}

/// The refusal a controller reports: reason `EngineUnsupported`, waiting for a spec change.
pub fn unsupported(e: Unsupported) -> Error {
    Error::InvalidSpec {
        reason: Unsupported::REASON,
        message: e.to_string(),
    }
}

/// `Ok` when `engine` can do `capability`.
pub fn require(engine: Engine, capability: Capability) -> Result<(), Error> {
    kind(engine).require(capability).map_err(unsupported)
}

/// What a DatabaseEnvironment's spec asks of its engine (pure).
pub fn asked_by(spec: &DatabaseEnvironmentSpec) -> Vec<Capability> {
    let mut asked = Vec::new();
    if let Some(server) = &spec.server {
        asked.push(Capability::SharedServer);
        if server.template.is_some() || server.template_from.is_some() {
            asked.push(Capability::Template);
        }
    }
    if spec.instance.is_some() {
        asked.push(Capability::Instance);
    }
    if spec.external.is_some() {
        asked.push(Capability::External);
    }
    if spec.seed.is_some() {
        asked.push(Capability::Seed);
    }
    if spec.restore.is_some() {
        asked.push(Capability::RestoreFromBackup);
    }
    if spec.migrations.is_some() {
        asked.push(Capability::Migrations);
    }
    if spec
        .health_check
        .as_ref()
        .is_some_and(|h| h.query != crate::api::database_environment::HealthCheck::default().query)
    {
        asked.push(Capability::HealthQuery);
    }
    asked
}

/// `Ok` when the environment's engine can do everything its spec asks; else the first refusal.
pub fn require_spec(spec: &DatabaseEnvironmentSpec) -> Result<Kind, Error> {
    let kind = kind(spec.engine);
    kind.require_all(asked_by(spec)).map_err(unsupported)?;
    Ok(kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: serde_json::Value) -> DatabaseEnvironmentSpec {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn a_spec_asks_for_what_it_sets() {
        let plain = spec(serde_json::json!({"tier": "dev", "engine": "redis",
            "server": {"serverRef": {"name": "shared-redis"}}}));
        assert_eq!(asked_by(&plain), [Capability::SharedServer]);
        assert_eq!(require_spec(&plain).unwrap(), Kind::Redis);

        let seeded = spec(serde_json::json!({"tier": "dev", "engine": "redis",
            "server": {"serverRef": {"name": "r"}},
            "seed": {"configMapRef": {"name": "s"}}}));
        let refused = require_spec(&seeded).unwrap_err();
        assert_eq!(refused.reason(), "EngineUnsupported");
        assert!(
            refused.to_string().contains("seeds (spec.seed)"),
            "{refused}"
        );

        let pg = spec(serde_json::json!({"tier": "ci",
            "server": {"serverRef": {"name": "pg"}, "template": "t"},
            "migrations": {"configMapNames": ["m"]},
            "healthCheck": {"query": "select count(*) from t"}}));
        assert_eq!(
            asked_by(&pg),
            [
                Capability::SharedServer,
                Capability::Template,
                Capability::Migrations,
                Capability::HealthQuery
            ]
        );
        assert!(require_spec(&pg).is_ok());
    }
}
