//! The command line and configuration (CONTRACT §1): every setting is a flag
//! with an environment variable and a default, loaded once at start.

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(name = "roster", version, about = "Event-sourced user and account registry")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    #[command(flatten)]
    pub log: LogArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// HTTP API, projectors and the Kafka publisher in one process. Creates
    /// the database if missing and applies migrations first.
    Serve(ServeArgs),
    /// Create the database if missing, apply migrations, exit.
    Migrate(DbArgs),
    /// Manage API clients.
    Client {
        #[command(subcommand)]
        command: ClientCommand,
    },
    /// Rebuild read models from the event store, with progress; exits 0 when caught up.
    Replay(ReplayArgs),
    /// Print Roster's encryption certificate (PEM): the one clients
    /// encrypt requests for (CONTRACT §10).
    EncryptionCertificate(EncryptionKeyArgs),
    /// Manage the keys of personal data.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Rewrap every key still under ROSTER_PREVIOUS_MASTER_KEY with
    /// ROSTER_MASTER_KEY (run it with both set; resumable).
    RotateMaster(KeysArgs),
    /// Seal the personal data of a store written before encryption, in
    /// place, with progress; resumable. `roster serve` waits for it.
    SealExisting(KeysArgs),
}

#[derive(Debug, Clone, Args)]
pub struct KeysArgs {
    #[command(flatten)]
    pub db: DbArgs,
    #[command(flatten)]
    pub keys: KeyArgs,
}

/// The master key that wraps every data key.
#[derive(Debug, Clone, Args)]
pub struct KeyArgs {
    /// Base64 of 32 random bytes (`openssl rand -base64 32`). Unset: a
    /// development key kept in --master-key-file, with a warning.
    #[arg(long, env = "ROSTER_MASTER_KEY", hide_env_values = true)]
    pub master_key: Option<String>,
    /// The master key being rotated away from, while `roster keys
    /// rotate-master` runs.
    #[arg(long, env = "ROSTER_PREVIOUS_MASTER_KEY", hide_env_values = true)]
    pub previous_master_key: Option<String>,
    /// Where the development master key is kept when ROSTER_MASTER_KEY is
    /// unset [default: $XDG_DATA_HOME/roster/dev-master.key, or
    /// ~/.local/share/roster/dev-master.key].
    #[arg(long, env = "ROSTER_MASTER_KEY_FILE")]
    pub master_key_file: Option<std::path::PathBuf>,
}

impl KeyArgs {
    /// The development key's file.
    pub fn dev_key_file(&self) -> std::path::PathBuf {
        match &self.master_key_file {
            Some(path) => path.clone(),
            None => dev_dir().join("dev-master.key"),
        }
    }
}

/// Where development keys are kept: `$XDG_DATA_HOME/roster`, or
/// `~/.local/share/roster`.
fn dev_dir() -> std::path::PathBuf {
    let data = std::env::var_os("XDG_DATA_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".local/share")))
        .unwrap_or_else(|| std::path::PathBuf::from("."));
    data.join("roster")
}

#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Provision an API client (creates the company if new); prints
    /// {"client_id","client_secret","company_id","scopes"} on stdout.
    Create(ClientCreateArgs),
    /// Register or replace a client's keys for signed and encrypted calls;
    /// prints the client's JSON.
    Update(ClientUpdateArgs),
}

#[derive(Debug, Clone, Args)]
pub struct DbArgs {
    /// Postgres: event store and read models.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/roster"
    )]
    pub database_url: String,
}

#[derive(Debug, Clone, Args)]
pub struct LogArgs {
    /// Log format.
    #[arg(long, env = "ROSTER_LOG_FORMAT", default_value = "pretty", global = true)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ValueEnum)]
pub enum Role {
    /// The HTTP API.
    Api,
    /// The read-model projectors.
    Projector,
    /// The Kafka publisher and the webhook deliverer.
    Publisher,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub db: DbArgs,
    /// HTTP listen address.
    #[arg(long, env = "ROSTER_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Kafka bootstrap servers; an empty string disables publishing.
    #[arg(long, env = "KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub kafka_brokers: String,
    /// Topic for all domain events.
    #[arg(long, env = "KAFKA_TOPIC", default_value = "roster.events.v1")]
    pub kafka_topic: String,
    /// The parts to run in this process.
    #[arg(
        long,
        env = "ROSTER_ROLE",
        value_delimiter = ',',
        default_value = "api,projector,publisher"
    )]
    pub role: Vec<Role>,
    #[command(flatten)]
    pub keys: KeyArgs,
    #[command(flatten)]
    pub webhooks: WebhookArgs,
    #[command(flatten)]
    pub encryption: EncryptionKeyArgs,
    /// The URL clients call, e.g. https://roster.example.com: the base URI
    /// of signed requests [default: http:// + the Host header].
    #[arg(long, env = "ROSTER_PUBLIC_URL")]
    pub public_url: Option<String>,
}

/// Roster's RSA key for encrypted payloads (CONTRACT §10).
#[derive(Debug, Clone, Args)]
pub struct EncryptionKeyArgs {
    /// Roster's RSA private key (PKCS#8 PEM, 2048 bits or more), or the
    /// path of a file holding it. Unset: a development key made once into
    /// --encryption-key-file, with a warning.
    #[arg(long, env = "ROSTER_ENCRYPTION_KEY", hide_env_values = true)]
    pub encryption_key: Option<String>,
    /// Where the development encryption key is kept when
    /// ROSTER_ENCRYPTION_KEY is unset [default:
    /// $XDG_DATA_HOME/roster/dev-encryption.pem, or
    /// ~/.local/share/roster/dev-encryption.pem].
    #[arg(long, env = "ROSTER_ENCRYPTION_KEY_FILE")]
    pub encryption_key_file: Option<std::path::PathBuf>,
}

impl EncryptionKeyArgs {
    /// The key: ROSTER_ENCRYPTION_KEY, else the development key file
    /// (made on first use; the first of two processes making it wins).
    pub fn load(&self) -> anyhow::Result<crate::jwe::PrivateKey> {
        use anyhow::Context;
        if let Some(value) = self.encryption_key.as_deref().filter(|v| !v.trim().is_empty()) {
            let pem = match value.trim_start().starts_with("-----BEGIN") {
                true => value.as_bytes().to_vec(),
                false => std::fs::read(value.trim())
                    .with_context(|| format!("ROSTER_ENCRYPTION_KEY: cannot read {value}"))?,
            };
            return crate::jwe::PrivateKey::from_pem(&pem).context("ROSTER_ENCRYPTION_KEY");
        }
        let path = self
            .encryption_key_file
            .clone()
            .unwrap_or_else(|| dev_dir().join("dev-encryption.pem"));
        let key = match std::fs::read(&path) {
            Ok(pem) => crate::jwe::PrivateKey::from_pem(&pem).with_context(|| format!("{}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = crate::jwe::PrivateKey::generate()?;
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).with_context(|| format!("{}", dir.display()))?;
                }
                match roster_vault::write_new(&path, &key.to_pem()?) {
                    Ok(()) => key,
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        crate::jwe::PrivateKey::from_pem(&std::fs::read(&path)?)
                            .with_context(|| format!("{}", path.display()))?
                    }
                    Err(e) => return Err(e).with_context(|| format!("{}", path.display())),
                }
            }
            Err(e) => return Err(e).with_context(|| format!("{}", path.display())),
        };
        tracing::warn!(
            path = %path.display(),
            "ROSTER_ENCRYPTION_KEY is not set: using a development encryption key kept in a file; set it in production"
        );
        Ok(key)
    }
}

/// Webhook delivery (CONTRACT §9).
#[derive(Debug, Clone, Args)]
pub struct WebhookArgs {
    /// Waits before each retry of a failed delivery (`5s,5m,30m,2h`: ms,
    /// s, m, h or d); after the last one a delivery is failed.
    #[arg(long, env = "ROSTER_WEBHOOK_RETRY_SCHEDULE", default_value = roster_projections::webhooks::DEFAULT_SCHEDULE,
          value_parser = roster_projections::webhooks::parse_schedule)]
    pub webhook_retry_schedule: std::vec::Vec<std::time::Duration>,
    /// Let webhook URLs use http and loopback or private addresses
    /// (development, tests).
    #[arg(long, env = "ROSTER_WEBHOOK_ALLOW_PRIVATE", default_value_t = false, action = clap::ArgAction::Set)]
    pub webhook_allow_private: bool,
}

impl WebhookArgs {
    pub fn config(&self) -> roster_projections::webhooks::WebhookConfig {
        roster_projections::webhooks::WebhookConfig {
            schedule: self.webhook_retry_schedule.clone(),
            allow_private: self.webhook_allow_private,
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct ClientCreateArgs {
    #[command(flatten)]
    pub db: DbArgs,
    /// The company (tenant) slug the client acts for.
    #[arg(long)]
    pub company: String,
    /// A display name.
    #[arg(long)]
    pub name: Option<String>,
    /// Comma-separated scopes (default: all).
    #[arg(long, value_delimiter = ',')]
    pub scopes: Option<Vec<String>>,
    #[command(flatten)]
    pub keys: ClientKeyArgs,
}

/// A client's keys for signed and encrypted calls (CONTRACT §10).
#[derive(Debug, Clone, Args)]
pub struct ClientKeyArgs {
    /// PEM X.509 certificate or public key (RSA, 2048 bits or more) its
    /// OAuth 1.0a signatures verify under.
    #[arg(long)]
    pub signing_cert: Option<std::path::PathBuf>,
    /// PEM X.509 certificate or public key (RSA, 2048 bits or more) its
    /// encrypted answers are made for.
    #[arg(long)]
    pub encryption_cert: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct ClientUpdateArgs {
    #[command(flatten)]
    pub db: DbArgs,
    /// The client to update.
    pub client_id: uuid::Uuid,
    #[command(flatten)]
    pub keys: ClientKeyArgs,
}

#[derive(Debug, Clone, Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    pub db: DbArgs,
    /// The projection to rebuild (default: all).
    #[arg(long)]
    pub projection: Option<ProjectionName>,
    #[command(flatten)]
    pub keys: KeyArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProjectionName {
    /// Users: retrieve and list.
    #[value(name = "user_view")]
    UserView,
    /// Households.
    #[value(name = "household_view")]
    HouseholdView,
    /// Cards.
    #[value(name = "card_view")]
    CardView,
}
