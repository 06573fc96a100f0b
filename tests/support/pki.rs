//! Test certificates made with the openssl command: a CA, a server certificate for
//! 127.0.0.1 and a client certificate it signed (for mutual TLS), in a directory of the test.

use std::{path::Path, process::Command};

pub struct Pki {
    pub ca: String,
    pub server_cert: String,
    pub server_key: String,
    pub client_cert: String,
    pub client_key: String,
}

pub fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl is installed");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A key and a certificate `name`.pem for `subject` signed by the CA, with `extensions`.
fn signed(dir: &Path, name: &str, subject: &str, extensions: &str) {
    let (key, csr, ext) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.ext"),
    );
    openssl(
        dir,
        &[
            "req", "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-out", &csr, "-subj", subject,
        ],
    );
    std::fs::write(dir.join(&ext), extensions).unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &format!("{name}.pem"),
            "-days",
            "1",
            "-extfile",
            &ext,
        ],
    );
}

impl Pki {
    pub fn new(dir: &Path) -> Pki {
        Pki::with_client(dir, "/CN=netsonde test agent")
    }

    /// The CA, a server certificate for 127.0.0.1 and localhost, and a client certificate with
    /// this subject (the Kubernetes API server reads `O=` as the user's groups, `CN=` as its
    /// name).
    pub fn with_client(dir: &Path, client_subject: &str) -> Pki {
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "1",
                "-subj",
                "/CN=netsonde test CA",
            ],
        );
        signed(
            dir,
            "server",
            "/CN=127.0.0.1",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
        );
        signed(
            dir,
            "client",
            client_subject,
            "extendedKeyUsage=clientAuth\n",
        );
        let path = |name: &str| dir.join(name).display().to_string();
        Pki {
            ca: path("ca.pem"),
            server_cert: path("server.pem"),
            server_key: path("server.key"),
            client_cert: path("client.pem"),
            client_key: path("client.key"),
        }
    }
}
