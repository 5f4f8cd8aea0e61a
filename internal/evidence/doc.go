// Package evidence stores captured evidence as bundles: a folder of files plus
// a manifest.json listing every file's SHA-256, so anyone holding the
// manifest's own SHA-256 (recorded in the Incident) can prove that no file was
// changed, added or removed since capture.
package evidence
