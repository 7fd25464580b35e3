use anyhow::Context;
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use roster::app::{App, Settings};
use roster::config::{Cli, ClientCommand, ClientKeyArgs, Command, KeysCommand, ProjectionName, ReplayArgs, ServeArgs};
use roster::{auth, db, http, jwe, keys, telemetry};
use roster_projections::publisher::KafkaConfig;
use roster_projections::{card_view::CardView, engine, household_view::HouseholdView, user_view::UserView};
use std::sync::Arc;

/// glibc's malloc took a tenth of the service's CPU under load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    telemetry::init(cli.log.log_format);
    match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::Migrate(args) => {
            db::prepare(&args.database_url, 2).await?;
            tracing::info!("migrations applied");
            Ok(())
        }
        Command::Client {
            command: ClientCommand::Create(args),
        } => {
            let pool = db::prepare(&args.db.database_url, 2).await?;
            let keys = client_keys(&args.keys)?;
            let client = auth::create_client(
                &pool,
                &args.company,
                args.name.as_deref(),
                args.scopes.as_deref(),
                &keys,
            )
            .await?;
            println!("{}", serde_json::to_string(&client)?);
            Ok(())
        }
        Command::Client {
            command: ClientCommand::Update(args),
        } => {
            let keys = client_keys(&args.keys)?;
            anyhow::ensure!(
                keys.signing.is_some() || keys.encryption.is_some(),
                "give --signing-cert, --encryption-cert or both"
            );
            let pool = db::prepare(&args.db.database_url, 2).await?;
            let client = auth::update_client(&pool, args.client_id, &keys).await?;
            println!("{}", serde_json::to_string(&client)?);
            Ok(())
        }
        Command::EncryptionCertificate(args) => {
            print!("{}", args.load()?.certificate_pem()?);
            Ok(())
        }
        Command::Replay(args) => replay(args).await,
        Command::Keys {
            command: KeysCommand::RotateMaster(args),
        } => {
            let pool = db::prepare(&args.db.database_url, 2).await?;
            let vault = keys::vault(&pool, &args.keys).await?;
            anyhow::ensure!(
                args.keys.previous_master_key.is_some(),
                "set ROSTER_PREVIOUS_MASTER_KEY to the key being rotated away from"
            );
            let bar = ProgressBar::new(vault.under_previous(&pool).await? as u64).with_style(bar_style("keys"));
            let n = keys::rotate_master(&pool, &vault, |n| bar.inc(n)).await?;
            bar.finish();
            eprintln!("{n} keys rewrapped under master key {}", vault.master().id());
            Ok(())
        }
        Command::Keys {
            command: KeysCommand::SealExisting(args),
        } => {
            let pool = db::prepare(&args.db.database_url, 2).await?;
            let vault = keys::vault(&pool, &args.keys).await?;
            let bar = ProgressBar::new(keys::events_to_seal(&pool).await?).with_style(bar_style("events"));
            let n = keys::seal_existing(&pool, &vault, 2000, |n| bar.inc(n)).await?;
            bar.finish();
            eprintln!("{n} events sealed; the store holds no plaintext personal data");
            Ok(())
        }
    }
}

/// The keys `--signing-cert` and `--encryption-cert` name.
fn client_keys(args: &ClientKeyArgs) -> anyhow::Result<auth::ClientKeys> {
    let read = |path: &Option<std::path::PathBuf>, flag: &str| {
        path.as_ref()
            .map(|p| {
                let pem = std::fs::read(p).with_context(|| format!("{flag}: cannot read {}", p.display()))?;
                jwe::PublicKey::from_pem(&pem).with_context(|| format!("{flag} {}", p.display()))
            })
            .transpose()
    };
    Ok(auth::ClientKeys {
        signing: read(&args.signing_cert, "--signing-cert")?,
        encryption: read(&args.encryption_cert, "--encryption-cert")?,
    })
}

fn bar_style(unit: &str) -> ProgressStyle {
    ProgressStyle::with_template(&format!(
        "{{msg:12}} [{{bar:40}}] {{pos}}/{{len}} {unit} {{per_sec}} eta {{eta}}"
    ))
    .expect("static template")
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let pool = db::prepare(&args.db.database_url, 32).await?;
    keys::require_sealed(&pool).await?;
    let vault = keys::vault(&pool, &args.keys).await?;
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let kafka = (!args.kafka_brokers.trim().is_empty()).then(|| KafkaConfig {
        brokers: args.kafka_brokers.clone(),
        topic: args.kafka_topic.clone(),
    });
    let mut app = App::start(
        pool,
        Settings {
            roles: args.role,
            kafka,
            vault,
            webhooks: args.webhooks.config(),
            sealing: Arc::new(http::signed::Sealing::new(
                args.encryption.load()?,
                args.public_url.as_deref(),
            )?),
        },
        Some(listener),
    )
    .await?;
    tracing::info!(addr = ?app.addr, "roster serving");
    tokio::select! {
        _ = shutdown_signal() => tracing::info!("shutting down"),
        _ = app.wait() => tracing::error!("a component stopped; shutting down"),
    }
    app.stop().await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler can be installed");
        tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
    }
    #[cfg(not(unix))]
    ctrl_c.await.ok();
}

async fn replay(args: ReplayArgs) -> anyhow::Result<()> {
    let pool = db::prepare(&args.db.database_url, 4).await?;
    keys::require_sealed(&pool).await?;
    let vault = keys::vault(&pool, &args.keys).await?;
    let names = match args.projection {
        Some(p) => vec![p],
        None => vec![
            ProjectionName::UserView,
            ProjectionName::HouseholdView,
            ProjectionName::CardView,
        ],
    };
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&pool)
        .await?;
    for name in names {
        let bar = ProgressBar::new(total as u64).with_style(bar_style("events"));
        let started = std::time::Instant::now();
        let n = match name {
            ProjectionName::UserView => {
                bar.set_message("user_view");
                engine::replay(&pool, &vault, &Arc::new(UserView::default()), 5000, |n| {
                    bar.inc(n as u64)
                })
                .await?
            }
            ProjectionName::CardView => {
                bar.set_message("card_view");
                engine::replay(&pool, &vault, &Arc::new(CardView), 5000, |n| bar.inc(n as u64)).await?
            }
            ProjectionName::HouseholdView => {
                bar.set_message("household_view");
                engine::replay(&pool, &vault, &Arc::new(HouseholdView), 5000, |n| bar.inc(n as u64)).await?
            }
        };
        bar.finish();
        eprintln!("{name:?}: {n} events in {:.1}s", started.elapsed().as_secs_f64());
    }
    Ok(())
}
