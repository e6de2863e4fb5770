{{- /* Generated from webhook/annotations.py by testinfra/helm_schema.py (make render-base); do not edit. */ -}}
{{- define "oomdump.registry" -}}
{
  "durationPart": "([0-9]+(?:\\.[0-9]*)?|\\.[0-9]+)(ns|us|µs|μs|ms|s|m|h)",
  "durations": {
    "cooldown": {
      "allowed": "a Go duration from 1s to 24h, e.g. 30s or 5m",
      "annotation": "oomdump.io/cooldown",
      "env": "COOLDOWN",
      "maxNanoseconds": 86400000000000,
      "minNanoseconds": 1000000000
    },
    "watchTime": {
      "allowed": "a Go duration from 5ms to 10s, e.g. 100ms",
      "annotation": "oomdump.io/watch-time",
      "env": "WATCH_TIME",
      "maxNanoseconds": 10000000000,
      "minNanoseconds": 5000000
    }
  },
  "refused": {
    "bucket": {
      "allowed": "an S3 bucket name: 3-63 lowercase letters, digits, dots or hyphens, starting and ending with a letter or digit, not an IP address",
      "annotation": "oomdump.io/bucket",
      "env": "BUCKET",
      "patterns": [
        "^.{1,2}$",
        "^((25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\\.){3}(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])$"
      ]
    }
  },
  "unitNanoseconds": {
    "h": 3600000000000,
    "m": 60000000000,
    "ms": 1000000,
    "ns": 1,
    "s": 1000000000,
    "us": 1000,
    "µs": 1000,
    "μs": 1000
  }
}
{{- end }}
