//! `etl identity client add|list|revoke`: the identity service's API
//! clients. A new client's key is printed once; only its SHA-256 is kept.

use identity::clients;

use crate::Settings;

#[derive(clap::Subcommand)]
pub enum IdentityCommand {
    /// API clients of the identity service.
    #[command(subcommand)]
    Client(ClientCommand),
}

#[derive(clap::Subcommand)]
pub enum ClientCommand {
    /// Add a client and print its key (once: it cannot be shown again).
    Add {
        name: String,
        /// Comma-separated: ids:read, personal:read, decisions:write.
        #[arg(long, value_delimiter = ',', default_value = "ids:read")]
        scopes: Vec<String>,
    },
    /// List the clients (never their keys).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a client: its key stops working at once.
    Revoke { name: String },
}

pub async fn run(settings: &Settings, command: IdentityCommand) -> anyhow::Result<()> {
    let pool = crate::db::connect(settings).await?;
    let IdentityCommand::Client(command) = command;
    match command {
        ClientCommand::Add { name, scopes } => {
            let key = clients::add(&pool, &name, &scopes).await?;
            println!("{key}");
            eprintln!(
                "client {name} added with scopes {}; the key above is shown only now",
                scopes.join(",")
            );
        }
        ClientCommand::List { json } => {
            let list = clients::list(&pool).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
                return Ok(());
            }
            for c in &list {
                println!(
                    "{:>4} {:<24} {:<45} created {}{}",
                    c.id,
                    c.name,
                    c.scopes.join(","),
                    c.created_at.to_rfc3339(),
                    c.revoked_at
                        .map(|r| format!(", revoked {}", r.to_rfc3339()))
                        .unwrap_or_default()
                );
            }
            println!("{} client(s)", list.len());
        }
        ClientCommand::Revoke { name } => {
            clients::revoke(&pool, &name).await?;
            println!("client {name} revoked");
        }
    }
    Ok(())
}
