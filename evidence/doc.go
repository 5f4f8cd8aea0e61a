// Package evidence stores captured evidence as bundles: a folder of files plus
// a manifest.json listing every file's SHA-256, so anyone holding the
// manifest's own SHA-256 (recorded in the Incident) can prove that no file was
// changed, added or removed since capture.
//
// It also redacts what may hold secrets (Secret data, container env
// values, last-applied configurations) before riposte stores an object where
// more people can read it than could read the original: Incident sample
// events and evidence bundles.
package evidence
