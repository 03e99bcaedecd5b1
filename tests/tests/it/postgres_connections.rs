//! The services' connections to PostgreSQL: their sockets and sessions
//! as the server and the kernel see them (no timing).

use std::os::fd::{BorrowedFd, RawFd};

use nix::sys::socket::{getsockname, getsockopt, sockopt, SockaddrLike, SockaddrStorage};

/// Nagle's algorithm is off on every connection of the services' pool
/// (`TCP_NODELAY`). With it on, a statement whose message ends in a
/// partial segment (large array parameters, a COPY's rows) waits for the
/// server's delayed ACK, 40 ms on Linux: sqlx 0.9.0 left the option off,
/// and the matcher worked off a backlog about a fifth slower.
#[tokio::test]
async fn postgres_connections_send_without_delay() {
    let db = server();
    let pool = db.pool();
    let mut conn = pool.acquire().await.expect("PostgreSQL must be running");
    let port: i32 = sqlx::query_scalar("SELECT inet_client_port()")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    let sockets = tcp_sockets_on_local_port(port as u16);
    assert_eq!(sockets.len(), 1, "the connection's socket in /proc/self/fd");
    // SAFETY: the descriptor stays open while `conn` is held.
    let fd = unsafe { BorrowedFd::borrow_raw(sockets[0]) };
    assert!(
        getsockopt(&fd, sockopt::TcpNoDelay).unwrap(),
        "TCP_NODELAY is off on the pool's connection"
    );
}

/// The identity service's pool plans no parallel query (see
/// `DatabaseSettings::pool_for_point_reads`); the other services' pools
/// leave the server's setting alone.
#[tokio::test]
async fn point_read_pools_plan_no_parallel_query() {
    let db = server();
    // The session's value and where it came from (`client`: the options
    // the connection sent at login).
    let setting = |pool: sqlx::PgPool| async move {
        sqlx::query_as::<_, (String, String)>(
            "SELECT setting, source FROM pg_settings WHERE name = 'max_parallel_workers_per_gather'",
        )
        .fetch_one(&pool)
        .await
        .expect("PostgreSQL must be running")
    };
    let (value, source) = setting(db.pool_for_point_reads()).await;
    assert_eq!((value.as_str(), source.as_str()), ("0", "client"));
    let (_, source) = setting(db.pool()).await;
    assert_ne!(source, "client", "the other pools send no such option");
}

/// The local server's settings on its maintenance database: these tests
/// only read their sessions' state, they need no database of their own.
fn server() -> etl_runtime::database::DatabaseSettings {
    etl_runtime::database::DatabaseSettings {
        database_name: "postgres".into(),
        ..testkit::local_postgres()
    }
}

/// This process's TCP sockets bound to local `port`.
fn tcp_sockets_on_local_port(port: u16) -> Vec<RawFd> {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<RawFd>().ok())
        .filter(|fd| {
            getsockname::<SockaddrStorage>(*fd).is_ok_and(|a| local_port(&a) == Some(port))
        })
        .collect()
}

fn local_port(address: &SockaddrStorage) -> Option<u16> {
    match address.family()? {
        nix::sys::socket::AddressFamily::Inet => address.as_sockaddr_in().map(|a| a.port()),
        nix::sys::socket::AddressFamily::Inet6 => address.as_sockaddr_in6().map(|a| a.port()),
        _ => None,
    }
}
