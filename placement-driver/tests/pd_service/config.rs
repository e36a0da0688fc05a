//! Configuration: reading it from TOML, and refusing one that places this member elsewhere.

use std::time::Duration;

use placement_driver::PdConfig;

#[test]
fn config_reads_from_toml() {
    let config: PdConfig = toml::from_str(
        r#"
        name = "pd-1"
        listen_addr = "0.0.0.0:2379"
        advertise_addr = "10.0.0.1:2379"
        data_dir = "/var/lib/pd"
        tso_save_interval = "5s"
        tso_update_interval = 100
        "#,
    )
    .unwrap();
    assert_eq!(config.name, "pd-1");
    assert_eq!(config.tso_save_interval, Duration::from_secs(5));
    assert_eq!(config.tso_update_interval, Duration::from_millis(100));
    assert_eq!(config.id_alloc_step, PdConfig::default().id_alloc_step);
    config.validate().unwrap();
    assert!(toml::from_str::<PdConfig>("no_such_field = 1").is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_placed_elsewhere_in_initial_cluster_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = PdConfig::for_test(dir.path());
    config.name = "pd1".into();
    // This member listens on a free port, but the list says it is at port 1.
    config.initial_cluster = "pd1=http://127.0.0.1:1,pd2=http://127.0.0.1:2".into();
    let err = placement_driver::start(config).await.unwrap_err();
    assert!(
        err.to_string().contains("initial_cluster places pd1"),
        "{err}"
    );
}
