"""Errors: one base class for "the tool cannot do this", caught alike by the plugin and the command.

A ``ToolError`` is a broken input or a broken tool (a group config that does
not validate, Terraform failing, the endpoint gone): the plugin turns it into a
usage error or a test *error*, the ``immutable-infra`` command into one line
and exit status 2. Findings about the infrastructure are never exceptions:
they stay data (``immutable_infra.findings.Finding``) and fail tests.

Every module's error class subclasses ``ToolError`` (``CatalogError``,
``RunError``, ``SandboxError``, ``TerraformError``, ``GitRefError``,
``ImageManifestError``, ``ImageRegistrationError``, ``FaultRefused``,
``RolesError``, ``ConfigError``), so callers catch ``ToolError`` and never
keep a tuple of classes that falls behind.
"""

from __future__ import annotations


class ToolError(Exception):
    """The tool cannot do what was asked; the message is one line naming the problem and the fix."""
