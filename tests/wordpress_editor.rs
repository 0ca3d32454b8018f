#![allow(clippy::unwrap_used)] // tests fail loudly by design
//! Shop staff through the WooCommerce preset: a real WordPress (Debian's,
//! on nginx, PHP-FPM and MariaDB, all started here on loopback) behind the
//! preset as shipped (TLS removed; CRS and its WordPress plugin loaded), and
//! headless Chromium driving the block editor: log in, open a new post,
//! upload an image, publish, several times in a row. None of the editor's
//! requests may be refused or throttled (its first load makes dozens of
//! requests at once; theme and core files are served from the cache to
//! logged-in staff too).
//!
//! Needs Debian's wordpress, wordpress-theme-twentytwentythree, php-fpm,
//! php-mysql, mariadb-server and nginx (`scripts/setup.sh --for-tests`
//! installs them), Chromium and playwright-core. Every server runs from a
//! temporary folder on loopback ports and is stopped by PID at the end.
//! `REMPART_EDITOR_PAUSE=SECONDS` keeps the site up that long before the
//! browser starts, with its addresses printed, to look at it by hand.

mod common;

use common::*;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PASSWORD: &str = "Ed1tor-pass-phrase";

/// A process of the test's own, killed (by PID) when dropped.
struct Owned(Child);

impl Drop for Owned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(cmd: &mut Command, log: &Path) -> Owned {
    let out = std::fs::File::create(log).unwrap();
    let err = out.try_clone().unwrap();
    Owned(
        cmd.stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}")),
    )
}

fn need(binary: &str) -> PathBuf {
    ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        .iter()
        .map(|d| Path::new(d).join(binary))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("{binary} is missing: run scripts/setup.sh --for-tests"))
}

fn wait_until(what: &str, limit: Duration, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if ready() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{what} did not start within {limit:?}");
}

/// WordPress on nginx + PHP-FPM + MariaDB, on loopback ports of its own.
struct WordPress {
    _processes: Vec<Owned>,
    nginx: SocketAddr,
    _dir: tempfile::TempDir,
}

impl WordPress {
    fn start(site_url: &str) -> WordPress {
        let wp = Path::new("/usr/share/wordpress");
        assert!(
            wp.join("wp-settings.php").exists()
                && wp.join("wp-content/themes/twentytwentythree").exists(),
            "WordPress is missing: run scripts/setup.sh --for-tests (Debian packages wordpress, wordpress-theme-twentytwentythree)"
        );
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mut processes = Vec::new();

        // MariaDB on a socket of its own, no TCP.
        let data = d.join("mysql");
        let socket = d.join("mysql.sock");
        let status = Command::new(need("mariadb-install-db"))
            .args([
                "--no-defaults",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                "--user=root",
            ])
            .arg(format!("--datadir={}", data.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "mariadb-install-db failed");
        processes.push(spawn(
            Command::new(need("mariadbd"))
                .args(["--no-defaults", "--user=root", "--skip-networking"])
                .arg(format!("--datadir={}", data.display()))
                .arg(format!("--socket={}", socket.display()))
                .arg(format!("--pid-file={}", d.join("mysql.pid").display())),
            &d.join("mariadb.log"),
        ));
        wait_until("MariaDB", Duration::from_secs(30), || socket.exists());
        let status = Command::new(need("mariadb"))
            .args([
                "--no-defaults",
                "-uroot",
                "-e",
                "CREATE DATABASE wp CHARACTER SET utf8mb4",
            ])
            .arg(format!("--socket={}", socket.display()))
            .status()
            .unwrap();
        assert!(status.success(), "cannot create the database");

        // The site: Debian's WordPress copied, with a configuration of its own.
        let site = d.join("site");
        let status = Command::new("cp")
            .arg("-a")
            .arg(wp)
            .arg(&site)
            .status()
            .unwrap();
        assert!(status.success());
        std::fs::create_dir_all(site.join("wp-content/uploads")).unwrap();
        let salts: String = [
            "AUTH_KEY",
            "SECURE_AUTH_KEY",
            "LOGGED_IN_KEY",
            "NONCE_KEY",
            "AUTH_SALT",
            "SECURE_AUTH_SALT",
            "LOGGED_IN_SALT",
            "NONCE_SALT",
        ]
        .iter()
        .map(|k| {
            format!(
                "define('{k}', '{k}-rempart-test-{}');\n",
                std::process::id()
            )
        })
        .collect();
        std::fs::write(
            site.join("wp-config.php"),
            format!(
                "<?php\ndefine('DB_NAME', 'wp');\ndefine('DB_USER', 'root');\ndefine('DB_PASSWORD', '');\ndefine('DB_HOST', 'localhost:{socket}');\ndefine('DB_CHARSET', 'utf8mb4');\ndefine('DB_COLLATE', '');\n{salts}$table_prefix = 'wp_';\ndefine('WP_CONTENT_DIR', __DIR__ . '/wp-content');\ndefine('WP_HOME', '{site_url}');\ndefine('WP_SITEURL', '{site_url}');\ndefine('FS_METHOD', 'direct');\ndefine('DISABLE_WP_CRON', true);\ndefine('AUTOMATIC_UPDATER_DISABLED', true);\ndefine('WP_HTTP_BLOCK_EXTERNAL', true);\nif (!defined('ABSPATH')) define('ABSPATH', __DIR__ . '/');\nrequire_once ABSPATH . 'wp-settings.php';\n",
                socket = socket.display()
            ),
        )
        .unwrap();
        // Installed through PHP, as the web installer would.
        let host = site_url.trim_start_matches("http://");
        let install = format!(
            "<?php\n$_SERVER['HTTP_HOST'] = '{host}';\ndefine('WP_INSTALLING', true);\nrequire '{site}/wp-load.php';\nrequire_once ABSPATH . 'wp-admin/includes/upgrade.php';\nwp_install('Rempart test shop', 'admin', 'admin@shop.test', true, '', '{PASSWORD}');\nswitch_theme('twentytwentythree');\n$GLOBALS['wp_rewrite']->set_permalink_structure('/%postname%/');\nflush_rewrite_rules();\necho 'installed';\n",
            site = site.display()
        );
        std::fs::write(d.join("install.php"), install).unwrap();
        let out = Command::new(need("php"))
            .arg(d.join("install.php"))
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("installed"),
            "WordPress did not install: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );

        // PHP-FPM and nginx, as a shop runs them. Debian's fastcgi_params
        // pass `$host` (without the port) as HTTP_HOST; this site runs on a
        // port of its own, so the Host is passed as sent.
        let fpm = free_addr();
        std::fs::write(
            d.join("fpm.conf"),
            format!(
                "[global]\npid = {d}/fpm.pid\nerror_log = {d}/fpm.log\ndaemonize = no\n[www]\nlisten = {fpm}\npm = static\npm.max_children = 6\nclear_env = no\nphp_admin_value[upload_max_filesize] = 16M\nphp_admin_value[post_max_size] = 16M\n",
                d = d.display()
            ),
        )
        .unwrap();
        processes.push(spawn(
            Command::new(need("php-fpm8.2"))
                .args(["-R", "-F", "-y"])
                .arg(d.join("fpm.conf")),
            &d.join("fpm.out"),
        ));
        let nginx = free_addr();
        std::fs::create_dir_all(d.join("nginx-tmp")).unwrap();
        std::fs::write(
            d.join("nginx.conf"),
            format!(
                "user root;\ndaemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/nginx-error.log;\nevents {{}}\nhttp {{\n  include /etc/nginx/mime.types;\n  access_log off;\n  client_body_temp_path {d}/nginx-tmp/body;\n  fastcgi_temp_path {d}/nginx-tmp/fastcgi;\n  proxy_temp_path {d}/nginx-tmp/proxy;\n  uwsgi_temp_path {d}/nginx-tmp/uwsgi;\n  scgi_temp_path {d}/nginx-tmp/scgi;\n  server {{\n    listen {nginx};\n    root {site};\n    index index.php;\n    client_max_body_size 16m;\n    location / {{ try_files $uri $uri/ /index.php?$args; }}\n    location ~ \\.php$ {{\n      include /etc/nginx/fastcgi_params;\n      fastcgi_param HTTP_HOST $http_host;\n      fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name;\n      fastcgi_pass {fpm};\n    }}\n  }}\n}}\n",
                d = d.display(),
                site = site.display()
            ),
        )
        .unwrap();
        processes.push(spawn(
            Command::new(need("nginx"))
                .arg("-c")
                .arg(d.join("nginx.conf")),
            &d.join("nginx.out"),
        ));
        wait_until("nginx and PHP-FPM", Duration::from_secs(30), || {
            std::net::TcpStream::connect(nginx).is_ok() && std::net::TcpStream::connect(fpm).is_ok()
        });
        WordPress {
            _processes: processes,
            nginx,
            _dir: dir,
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_block_editor_works_through_the_preset() {
    let (listen, admin) = (free_addr(), free_addr());
    let site_url = format!("http://shop.test:{}", listen.port());
    let wordpress = tokio::task::spawn_blocking({
        let site_url = site_url.clone();
        move || WordPress::start(&site_url)
    })
    .await
    .unwrap();
    let mut blocks = String::new();
    for b in [
        "limits",
        "cache",
        "rate_limits",
        "bots",
        "brute_force",
        "card_testing",
        "waf",
    ] {
        blocks.push_str(&preset_block("woocommerce.yaml", b));
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("policy.yaml"),
        policy(listen, admin, &[wordpress.nginx], &blocks),
    )
    .unwrap();
    let env = crs_env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let proxy = Rempart::launch(dir, listen, admin, &[], &env).await;
    if let Ok(secs) = std::env::var("REMPART_EDITOR_PAUSE") {
        eprintln!(
            "paused: rempart {listen}, nginx {}, site {site_url}",
            wordpress.nginx
        );
        tokio::time::sleep(Duration::from_secs(secs.parse().unwrap_or(300))).await;
    }

    let run = browser_script(
        "editor.mjs",
        &[
            "--url",
            &site_url,
            "--rounds",
            "3",
            "--user",
            "admin",
            "--password",
            PASSWORD,
        ],
    )
    .await;
    assert!(
        run.ok && run.stdout.contains("\"ok\":true"),
        "{}\n{}\n{}",
        run.stdout,
        run.stderr,
        proxy
            .log()
            .lines()
            .filter(|l| l.contains("refused") || l.contains("status=4"))
            .take(40)
            .collect::<Vec<_>>()
            .join("\n")
    );
    let metrics = proxy.metrics().await;
    assert!(
        !metrics.contains("rempart_ratelimit_limited_total{"),
        "no limit refused a request: {}",
        metrics
            .lines()
            .filter(|l| l.contains("limited_total"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
