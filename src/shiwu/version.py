"""shiwu's version, in a module of its own so that any layer can read it without importing the
package's public API (and with it the recognizer and every backend)."""

__version__ = "0.1.0"
