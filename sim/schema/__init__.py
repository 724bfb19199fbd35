"""JSON Schema of slofsim's --json output (slofsim.schema.json)."""
