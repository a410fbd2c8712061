"""``distbuild verify``: check a CI-signed artifact offline against its Sigstore bundle."""

from __future__ import annotations

import time
from pathlib import Path

import click

from distbuild.cli.options import json_option, print_json
from distbuild.core import ui
from distbuild.core.errors import UsageError


@click.command("verify")
@click.argument("artifact", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--bundle",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The Sigstore bundle. Default: ARTIFACT.sigstore.json.",
)
@click.option(
    "--identity",
    required=True,
    help="The signer's identity (certificate SAN), e.g. "
    "https://github.com/OWNER/REPO/.github/workflows/release.yml@refs/tags/v1.0.",
)
@click.option(
    "--issuer",
    required=True,
    help="The OIDC issuer, e.g. https://token.actions.githubusercontent.com.",
)
@click.option(
    "--trusted-root",
    type=click.Path(dir_okay=False, path_type=Path),
    help="A Sigstore trusted_root.json. Default: the production root the sigstore package ships.",
)
@json_option
def verify_cmd(
    artifact: Path,
    bundle: Path | None,
    identity: str,
    issuer: str,
    trusted_root: Path | None,
    as_json: bool,
) -> None:
    """Verify ARTIFACT's Sigstore signature offline, for one identity and issuer."""
    from distbuild.sign.verify import verify

    if bundle is None:
        bundle = artifact.with_name(artifact.name + ".sigstore.json")
        if not bundle.is_file():
            raise UsageError(
                f"no bundle given and {bundle} does not exist",
                hint="name the bundle with --bundle FILE",
            )
    result = verify(artifact, bundle, identity=identity, issuer=issuer, trusted_root=trusted_root)
    logged = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(result.integrated_time))
    if as_json:
        print_json(
            {
                "artifact": str(result.artifact),
                "sha256": result.sha256,
                "identity": result.identity,
                "issuer": result.issuer,
                "log_index": result.log_index,
                "integrated_time": logged,
                "trusted_root": result.trusted_root,
            }
        )
        return
    click.echo(f"OK: {artifact}")
    ui.note(f"sha256 {result.sha256}")
    ui.note(f"signed by {result.identity} (issuer {result.issuer})")
    ui.note(f"logged in Rekor at index {result.log_index}, {logged}")
    ui.note(f"checked offline against {result.trusted_root}")


COMMANDS = [verify_cmd]
