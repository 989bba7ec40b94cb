//! Which engine an object asked for ([`Kind`], chosen per object by `spec.engine`) and what each engine
//! can do ([`Capability`]). A controller asks before it acts ([`Kind::require`]) and refuses what the
//! engine cannot do with one reason, `EngineUnsupported`, naming the engine and the capability, instead
//! of calling and failing half-way.

use std::fmt;

/// An engine, as `spec.engine` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Postgres,
    Redis,
    MongoDb,
}

/// Something a controller may ask of an engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Capability {
    /// An environment of its own on a shared server (`spec.server`).
    SharedServer,
    /// A server run in pods for one environment (`spec.instance`).
    Instance,
    /// An adopted database (`spec.external`).
    External,
    /// A seed applied once (`spec.seed`).
    Seed,
    /// Cloning a template (`spec.server.template`, `spec.server.templateFrom`).
    Template,
    /// Creating an environment from a backup (`spec.restore`).
    RestoreFromBackup,
    /// Schema migrations (`MigrationRun`, `spec.migrations`).
    Migrations,
    /// Scheduled backups (`BackupSchedule`).
    Backup,
    /// Restore drills (`RestoreDrill`).
    RestoreDrill,
    /// A health query of the user's choosing (`spec.healthCheck.query`).
    HealthQuery,
}

impl Capability {
    /// What the capability is, in the words of the spec that asks for it.
    pub fn describe(self) -> &'static str {
        match self {
            Capability::SharedServer => "environments on a shared server (spec.server)",
            Capability::Instance => "instances run in pods (spec.instance)",
            Capability::External => "adopted databases (spec.external)",
            Capability::Seed => "seeds (spec.seed)",
            Capability::Template => {
                "template clones (spec.server.template, spec.server.templateFrom)"
            }
            Capability::RestoreFromBackup => "environments created from a backup (spec.restore)",
            Capability::Migrations => "schema migrations (MigrationRun, spec.migrations)",
            Capability::Backup => "scheduled backups (BackupSchedule)",
            Capability::RestoreDrill => "restore drills (RestoreDrill)",
            Capability::HealthQuery => "health queries (spec.healthCheck.query)",
        }
    }
}

/// An engine asked for something it cannot do.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the {product} engine ({engine}) does not support {what} in this release")]
pub struct Unsupported {
    pub engine: &'static str,
    pub product: &'static str,
    pub what: &'static str,
    pub capability: Capability,
}

impl Unsupported {
    /// The reason conditions, events and metrics carry.
    pub const REASON: &'static str = "EngineUnsupported";
}

impl Kind {
    /// The engine's name, as `spec.engine`, a manifest and instance objects spell it.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Postgres => "postgres",
            Kind::Redis => "redis",
            Kind::MongoDb => "mongodb",
        }
    }

    /// The engine a manifest or `spec.engine` names.
    pub fn from_name(name: &str) -> Option<Kind> {
        [Kind::Postgres, Kind::Redis, Kind::MongoDb]
            .into_iter()
            .find(|k| k.name() == name)
    }

    /// The server product's name, for messages.
    pub fn product(self) -> &'static str {
        match self {
            Kind::Postgres => "PostgreSQL",
            Kind::Redis => "Redis",
            Kind::MongoDb => "MongoDB",
        }
    }

    /// What the engine declares it can do.
    pub fn capabilities(self) -> &'static [Capability] {
        match self {
            Kind::Postgres => super::postgres::CAPABILITIES,
            Kind::Redis => super::redis::CAPABILITIES,
            Kind::MongoDb => &[],
        }
    }

    pub fn supports(self, capability: Capability) -> bool {
        self.capabilities().contains(&capability)
    }

    /// `Ok` when the engine can do `capability`; else what to tell the user.
    pub fn require(self, capability: Capability) -> Result<(), Unsupported> {
        if self.supports(capability) {
            return Ok(());
        }
        Err(Unsupported {
            engine: self.name(),
            product: self.product(),
            what: capability.describe(),
            capability,
        })
    }

    /// Every capability in `asked` the engine has, or the first it lacks.
    pub fn require_all(
        self,
        asked: impl IntoIterator<Item = Capability>,
    ) -> Result<(), Unsupported> {
        asked.into_iter().try_for_each(|c| self.require(c))
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_does_everything_redis_what_it_declares() {
        for c in [
            Capability::SharedServer,
            Capability::Migrations,
            Capability::Seed,
            Capability::Backup,
            Capability::RestoreDrill,
        ] {
            assert!(Kind::Postgres.supports(c), "{c:?}");
        }
        assert!(Kind::Redis.supports(Capability::SharedServer));
        let refused = Kind::Redis.require(Capability::Migrations).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "the Redis engine (redis) does not support schema migrations (MigrationRun, spec.migrations) in this release"
        );
        assert_eq!(refused.capability, Capability::Migrations);
        assert!(
            Kind::MongoDb
                .require_all([Capability::SharedServer])
                .is_err()
        );
    }
}
