"""The on-disk package: a directory with manifest.json, ONNX/TensorRT artifacts and the profile.

Loading (:func:`load_package`) needs only the standard library: it validates the schema and
every artifact's sha256 before anything runs. Writing (:class:`PackageWriter`) is atomic.
"""
from edgeinf.package.loader import Package, artifact_key, bits_tag, file_sha256, load_package, read_manifest
from edgeinf.package.schema import FORMAT, MANIFEST_NAME, SCHEMA_VERSION, validate_manifest
from edgeinf.package.writer import PackageWriter, build_info, library_versions, update_manifest

__all__ = [
    "FORMAT", "MANIFEST_NAME", "SCHEMA_VERSION", "Package", "PackageWriter", "artifact_key", "bits_tag",
    "build_info", "file_sha256", "library_versions", "load_package", "read_manifest", "update_manifest", "validate_manifest",
]
