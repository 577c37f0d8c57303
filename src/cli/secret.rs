#[derive(clap::Subcommand, Debug)]
pub enum SecretCommand { Ls }
pub async fn run(_: SecretCommand, _: &crate::client::Client) -> anyhow::Result<()> { Ok(()) }
