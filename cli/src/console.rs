//! `etl console user add|list|disable|password`: the steward console's
//! accounts. Passwords are read from standard input (a terminal does not
//! echo them), never from the command line (it shows in `ps` and history).

use std::io::{BufRead, IsTerminal, Write};

use steward_console::accounts;

use crate::Settings;

#[derive(clap::Subcommand)]
pub enum ConsoleCommand {
    /// Steward accounts of the console.
    #[command(subcommand)]
    User(UserCommand),
}

#[derive(clap::Subcommand)]
pub enum UserCommand {
    /// Add an account; its password is read from standard input.
    Add {
        name: String,
        /// steward (decides), viewer (reads) or administrator (also
        /// manages accounts).
        #[arg(long, default_value = "steward")]
        role: String,
    },
    /// List the accounts (never their passwords).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Disable an account: its sessions end at once.
    Disable { name: String },
    /// Set a new password (read from standard input); sessions end.
    Password { name: String },
}

/// One line of standard input; on a terminal, asked for without echo.
fn read_password() -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    let terminal = stdin.is_terminal();
    if terminal {
        eprint!("password: ");
        std::io::stderr().flush()?;
        set_echo(false);
    }
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    if terminal {
        set_echo(true);
        eprintln!();
    }
    read?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

/// Turns the terminal's echo off or on (`stty`, present on every Debian).
fn set_echo(on: bool) {
    let _ = std::process::Command::new("stty")
        .arg(if on { "echo" } else { "-echo" })
        .stdin(std::process::Stdio::inherit())
        .status();
}

pub async fn run(settings: &Settings, command: ConsoleCommand) -> anyhow::Result<()> {
    let pool = crate::db::connect(settings).await?;
    let ConsoleCommand::User(command) = command;
    match command {
        UserCommand::Add { name, role } => {
            let password = read_password()?;
            accounts::add(&pool, &name, &role, &password).await?;
            println!("account {name} added as {role}");
        }
        UserCommand::List { json } => {
            let list = accounts::list(&pool).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
                return Ok(());
            }
            for a in &list {
                println!(
                    "{:>4} {:<24} {:<14} created {}{}",
                    a.id,
                    a.name,
                    a.role,
                    a.created_at.to_rfc3339(),
                    a.disabled_at
                        .map(|d| format!(", disabled {}", d.to_rfc3339()))
                        .unwrap_or_default()
                );
            }
            println!("{} account(s)", list.len());
        }
        UserCommand::Disable { name } => {
            accounts::disable(&pool, &name).await?;
            println!("account {name} disabled");
        }
        UserCommand::Password { name } => {
            let password = read_password()?;
            accounts::set_password(&pool, &name, &password).await?;
            println!("password of {name} changed");
        }
    }
    Ok(())
}
