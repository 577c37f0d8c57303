#[derive(clap::Subcommand, Debug)]
pub enum AuditCommand { Verify }
pub async fn run(_: AuditCommand, _: &crate::client::Client) -> anyhow::Result<()> { Ok(()) }
