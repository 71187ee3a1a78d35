// Package examples holds ready policies for typical sites (home.yaml, office.yaml,
// factory.yaml); its test parses, validates and compiles each of them with the policy package.
package examples
