//! Answers every HTTP request with a greeting; the port comes from $PORT (default 8080).
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};

fn greeting() -> &'static str {
    "Hello from hello-rust"
}

/// Answers one connection; a client that hangs up early is that connection's problem only.
fn answer(mut stream: TcpStream) -> std::io::Result<()> {
    // Read the request head; the answer does not depend on it.
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    while reader.read_line(&mut line)? > 2 {
        line.clear();
    }
    let body = format!("{}\n", greeting());
    write!(
        stream,
        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{}",
        body.len(),
        body
    )
}

fn main() -> std::io::Result<()> {
    let port = std::env::var("PORT").unwrap_or_else(|_| "8080".to_string());
    let listener = TcpListener::bind(format!("0.0.0.0:{port}"))?;
    println!("hello-rust listening on {port}");
    for stream in listener.incoming() {
        if let Err(error) = stream.and_then(answer) {
            eprintln!("hello-rust: {error}");
        }
    }
    Ok(())
}
