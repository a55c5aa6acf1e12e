"""`factory keys generate` and the registry side of `factory verify` (--image, --key)."""

import click

from factory.errors import FactoryError


@click.group(name="keys")
def keys_group() -> None:
    """Signing keys for the images' attestations (FACTORY_SIGNING_KEY names the private key)."""


@keys_group.command(name="generate")
@click.option(
    "--output",
    required=True,
    type=click.Path(dir_okay=False),
    help="The private key file to write (mode 0600); the public key goes to FILE.pub.",
)
@click.option(
    "--kind",
    type=click.Choice(["ed25519", "ecdsa-p256"]),
    default="ed25519",
    help="Key algorithm.",
)
def generate(output: str, kind: str) -> None:
    """Write a new signing key and its public key; never overwrites a file."""
    from factory.supply_chain.signing_keys import generate_key_pair

    try:
        private, public, key_id = generate_key_pair(output, kind)
    except FactoryError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"wrote {kind} key {key_id[:16]} to {private} (0600) and {public}")
    click.echo(f"sign builds with: export FACTORY_SIGNING_KEY={private}")
    click.echo(f"verify images with: factory verify --image REF@DIGEST --key {public}")


def run_verify(build_id: str | None, no_registry: bool, image: str | None, key: str | None) -> None:
    """`factory verify`: a record (BUILD_ID), an image from the registry alone (--image --key),
    or both a record and its image's attestations (BUILD_ID --key)."""
    from factory.supply_chain.attestation_verify import verify_image
    from factory.supply_chain.signing_keys import load_public_key

    if (build_id is None) == (image is None):
        msg = "give either BUILD_ID or --image REF@DIGEST (with --key), not both or neither"
        raise click.UsageError(msg)
    if image and not key:
        msg = "--image needs --key PUB: the public key the attestations must be signed with"
        raise click.UsageError(msg)
    reports = []
    try:
        public = load_public_key(key) if key else None
        if build_id is not None:
            from factory.records.selection import open_record_store
            from factory.settings import Settings
            from factory.supply_chain.verify import verify_build

            settings = Settings.from_env()
            report = verify_build(
                build_id, open_record_store(settings), registry_check=not no_registry
            )
            reports.append(report)
            record_image = report.image_ref
            if public is not None and record_image:
                reports.append(verify_image(record_image, public))
        else:
            assert public is not None and image is not None
            reports.append(verify_image(image, public))
    except FactoryError as exc:
        raise click.ClickException(str(exc)) from None
    for report in reports:
        for line in report.lines():
            click.echo(line)
    failed = [c.name for report in reports for c in report.failed]
    if failed:
        what = image if build_id is None else build_id
        msg = f"{what} does not verify: {', '.join(failed)}"
        raise click.ClickException(msg)
