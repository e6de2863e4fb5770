"""CA and serving-certificate generation, caBundle patching and rotation for the webhook."""
