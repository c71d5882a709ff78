import os

import pytest

from autorisk_tf.data.schema import SchemaError, load_schema, parse_schema

SCHEMAS = os.path.join(os.path.dirname(__file__), "..", "autorisk_tf", "schemas")


def test_shipped_schemas_load():
    sim = load_schema(os.path.join(SCHEMAS, "simulated.yaml"))
    assert sim.key == "user_id"
    assert sim.field_names == ("event_type", "channel", "device", "pay_method", "amount", "item")
    assert [f.name for f in sim.fields_of_kind("numeric")] == ["amount"]
    assert sim.fields_of_kind("numeric")[0].log is True
    assert sim.label_names == ("is_risk", "takeover", "age_band", "preference", "profile")
    cdnow = load_schema(os.path.join(SCHEMAS, "cdnow.yaml"))
    assert cdnow.timestamp_format == "%Y%m%d"
    assert cdnow.csv_delimiter == "whitespace"


def test_defaults_and_column_rename():
    schema = parse_schema("key: k\ntimestamp: {column: t}\nfields:\n"
                          "  - {name: kind, column: raw_kind, kind: categorical}\n")
    (field,) = schema.fields
    assert (field.name, field.column, field.max_vocab, field.min_count) == (
        "kind", "raw_kind", 10_000, 1)
    assert schema.time_features.delta_buckets == 24
    assert schema.label_key == "k"


@pytest.mark.parametrize("text, expected", [
    ("key: k\ntimestamp: {column: t}\nfields:\n  - {name: a, kind: categorical}\n"
     "  - {name: b, kind: categorial}\n",
     "s.yaml:5: fields[1].kind: unknown value 'categorial'"),
    ("key: k\ntimestamp: {column: t}\nfields:\n  - {name: a, kind: categorical}\n"
     "  - {name: a, kind: numeric}\n",
     "s.yaml:5: fields[1].name: duplicate field 'a' (first at fields[0])"),
    ("timestamp: {column: t}\nfields:\n  - {name: a, kind: categorical}\n",
     "s.yaml:1: schema.key: is required"),
    ("key: k\nkey: j\ntimestamp: {column: t}\nfields: [{name: a, kind: text}]\n",
     "s.yaml:2: duplicate key 'key'"),
    ("key: k\ntimestamp: {column: t}\nfields:\n  - {name: a, kind: numeric, buckets: 3}\n",
     "s.yaml:4: fields[0].buckets: unknown key"),
    ("key: k\ntimestamp: {column: t}\nfields:\n  - {name: a, kind: numeric, num_buckets: x}\n",
     "s.yaml:4: fields[0].num_buckets: must be int"),
    ("key: k\ntimestamp: {column: t, format: unix}\nfields: [{name: a, kind: text}]\n",
     "s.yaml:2: timestamp.format: unknown format 'unix'"),
    ("key: k\ntimestamp: {column: t}\nfields: []\n", "schema.fields: must be a non-empty list"),
    ("key: [k\n", "s.yaml: not valid YAML"),
    ("key: k\ntimestamp: {column: t}\nfields:\n  - {name: time_hour, kind: categorical}\n",
     "s.yaml:4: fields[0].name: field name 'time_hour' is reserved"),
])
def test_errors_name_file_line_and_key(text, expected):
    with pytest.raises(SchemaError) as error:
        parse_schema(text, source="s.yaml")
    assert expected in str(error.value)


def test_unreadable_file_is_a_schema_error(tmp_path):
    with pytest.raises(SchemaError, match="cannot read schema"):
        load_schema(str(tmp_path / "missing.yaml"))
