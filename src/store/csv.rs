//! A reader for the annotated CSV that InfluxDB 2 returns from `/api/v2/query`.
//!
//! A response is a sequence of blocks. Each block starts with annotation rows
//! (`#datatype`, `#group`, `#default`), then a header row, then data rows; blocks are
//! separated by blank lines, and one block may hold several tables (the `table`
//! column). The first column is reserved for annotations and is empty in data rows.
//! Cells may be empty: the `#default` annotation gives their value, or they are null
//! (the case that makes the `influxdb2` crate panic, see docs/decisions.md). A query
//! that fails after the response has started has its error in the body as a block with
//! `error` and `reference` columns, which this reader turns into an error.
//!
//! Pure: takes the body as a string. It never panics on any input (property-tested).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

/// A typed cell.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    String(String),
    Long(i64),
    Unsigned(u64),
    Double(f64),
    Bool(bool),
    Time(DateTime<Utc>),
    /// A Flux duration, kept as written (`1h30m`).
    Duration(String),
}

impl Value {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) | Value::Duration(s) => Some(s),
            _ => None,
        }
    }

    /// Numbers of any kind as `f64`.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::Double(x) => Some(x),
            Value::Long(x) => Some(x as f64),
            Value::Unsigned(x) => Some(x as f64),
            _ => None,
        }
    }

    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::Long(x) => Some(x),
            Value::Unsigned(x) => i64::try_from(x).ok(),
            _ => None,
        }
    }

    pub fn as_time(&self) -> Option<DateTime<Utc>> {
        match *self {
            Value::Time(t) => Some(t),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }
}

/// One row, by column name. `result` and `table` are kept like any other column.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Record {
    pub values: BTreeMap<String, Value>,
}

impl Record {
    pub fn get(&self, column: &str) -> Option<&Value> {
        self.values.get(column).filter(|v| !v.is_null())
    }

    pub fn str(&self, column: &str) -> Option<&str> {
        self.get(column).and_then(Value::as_str)
    }

    pub fn f64(&self, column: &str) -> Option<f64> {
        self.get(column).and_then(Value::as_f64)
    }

    pub fn i64(&self, column: &str) -> Option<i64> {
        self.get(column).and_then(Value::as_i64)
    }

    pub fn time(&self, column: &str) -> Option<DateTime<Utc>> {
        self.get(column).and_then(Value::as_time)
    }

    /// The table id InfluxDB gave this row (rows of one series share it).
    pub fn table(&self) -> Option<i64> {
        self.i64("table")
    }
}

/// Why a response could not be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CsvError {
    #[error("InfluxDB reported a query error: {0}")]
    Query(String),
    #[error("malformed CSV at line {line}: {message}")]
    Malformed { line: u64, message: String },
    #[error("line {line}, column {column:?}: cannot read {value:?} as {datatype}")]
    BadCell {
        line: u64,
        column: String,
        value: String,
        datatype: String,
    },
}

#[derive(Default)]
struct Block {
    datatypes: Vec<String>,
    defaults: Vec<String>,
    header: Option<Vec<String>>,
}

fn parse_cell(datatype: &str, raw: &str) -> Option<Value> {
    Some(match datatype {
        "string" | "base64Binary" | "" => Value::String(raw.to_owned()),
        "long" => Value::Long(raw.parse().ok()?),
        "unsignedLong" => Value::Unsigned(raw.parse().ok()?),
        // Flux writes +Inf, -Inf and NaN for non-finite doubles.
        "double" => Value::Double(match raw {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            _ => raw.parse().ok()?,
        }),
        "boolean" => Value::Bool(match raw {
            "true" => true,
            "false" => false,
            _ => return None,
        }),
        "duration" => Value::Duration(raw.to_owned()),
        t if t.starts_with("dateTime") => {
            Value::Time(DateTime::parse_from_rfc3339(raw).ok()?.with_timezone(&Utc))
        }
        // Unknown future types are kept as text rather than failing the whole query.
        _ => Value::String(raw.to_owned()),
    })
}

/// Reads an annotated CSV body into records.
pub fn parse(body: &str) -> Result<Vec<Record>, CsvError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(body.as_bytes());
    let mut records = Vec::new();
    let mut block = Block::default();
    let mut row = csv::StringRecord::new();
    loop {
        match reader.read_record(&mut row) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                return Err(CsvError::Malformed {
                    line: e.position().map_or(0, |p| p.line()),
                    message: e.to_string(),
                })
            }
        }
        let line = row.position().map_or(0, |p| p.line());
        let first = row.get(0).unwrap_or("");
        // The csv reader skips blank lines, so a new block announces itself by its
        // annotations arriving after a header was seen.
        if first.starts_with('#') {
            if block.header.is_some() {
                block = Block::default();
            }
            let cells: Vec<String> = row.iter().map(str::to_owned).collect();
            match first {
                "#datatype" => block.datatypes = cells,
                "#default" => block.defaults = cells,
                _ => {} // #group and unknown annotations carry nothing we need.
            }
            continue;
        }
        let Some(header) = &block.header else {
            let header: Vec<String> = row.iter().map(str::to_owned).collect();
            block.header = Some(header);
            continue;
        };
        let record = read_row(header, &block, &row, line)?;
        if header.iter().any(|h| h == "error") && header.iter().any(|h| h == "reference") {
            let message = record.str("error").unwrap_or("unknown error").to_owned();
            return Err(CsvError::Query(message));
        }
        records.push(record);
    }
    Ok(records)
}

fn read_row(
    header: &[String],
    block: &Block,
    row: &csv::StringRecord,
    line: u64,
) -> Result<Record, CsvError> {
    let mut values = BTreeMap::new();
    for (i, name) in header.iter().enumerate() {
        // Column 0 is the annotation column (empty name): skip it, and any other
        // unnamed column.
        if name.is_empty() {
            continue;
        }
        let datatype = block.datatypes.get(i).map_or("string", String::as_str);
        let mut raw = row.get(i).unwrap_or("");
        if raw.is_empty() {
            raw = block.defaults.get(i).map_or("", String::as_str);
        }
        let value = if raw.is_empty() && datatype != "string" {
            Value::Null
        } else {
            parse_cell(datatype, raw).ok_or_else(|| CsvError::BadCell {
                line,
                column: name.clone(),
                value: raw.chars().take(60).collect(),
                datatype: datatype.to_owned(),
            })?
        };
        values.insert(name.clone(), value);
    }
    Ok(Record { values })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const TWO_TABLES: &str = "#group,false,false,true,true,false,false,true,true,true\r
#datatype,string,long,dateTime:RFC3339,dateTime:RFC3339,dateTime:RFC3339,double,string,string,string\r
#default,_result,,,,,,,,\r
,result,table,_start,_stop,_time,_value,_field,_measurement,zone\r
,,0,2026-11-28T00:00:00Z,2026-11-28T01:00:00Z,2026-11-28T00:10:00.125Z,21.5,temp,readings,nord\r
,,0,2026-11-28T00:00:00Z,2026-11-28T01:00:00Z,2026-11-28T00:11:00Z,,temp,readings,nord\r
,,1,2026-11-28T00:00:00Z,2026-11-28T01:00:00Z,2026-11-28T00:10:00Z,+Inf,temp,readings,sud\r
\r
#group,false,false,true,false\r
#datatype,string,long,string,long\r
#default,_result,,,\r
,result,table,zone,_value\r
,,2,nord,42\r
\r
";

    #[test]
    fn reads_several_blocks_and_tables() {
        let recs = parse(TWO_TABLES).unwrap();
        assert_eq!(recs.len(), 4);
        assert_eq!(recs[0].str("result"), Some("_result"));
        assert_eq!(recs[0].f64("_value"), Some(21.5));
        assert_eq!(recs[0].str("zone"), Some("nord"));
        assert_eq!(
            recs[0].time("_time").unwrap().timestamp_millis(),
            1_795_824_600_125
        );
        // The empty numeric cell that panics influxdb2 0.5.2 is a null here.
        assert_eq!(recs[1].get("_value"), None);
        assert!(recs[1].values["_value"].is_null());
        assert_eq!(recs[2].f64("_value"), Some(f64::INFINITY));
        assert_eq!(recs[2].table(), Some(1));
        assert_eq!(recs[3].i64("_value"), Some(42));
        assert_eq!(recs[3].get("_time"), None);
    }

    #[test]
    fn empty_body_is_no_records() {
        assert_eq!(parse("").unwrap(), vec![]);
        assert_eq!(parse("\r\n").unwrap(), vec![]);
    }

    #[test]
    fn error_in_body_is_an_error() {
        let body = "#datatype,string,string\n#group,true,true\n#default,,\n,error,reference\n,\"panic: runtime error: boom, really\",897\n";
        assert_eq!(
            parse(body).unwrap_err(),
            CsvError::Query("panic: runtime error: boom, really".into())
        );
    }

    #[test]
    fn bad_cells_are_reported() {
        let body = "#datatype,string,long,double\n,result,table,_value\n,,0,abc\n";
        let err = parse(body).unwrap_err();
        assert!(
            matches!(&err, CsvError::BadCell { column, .. } if column == "_value"),
            "{err}"
        );
    }

    #[test]
    fn quoted_cells_with_commas_and_newlines() {
        let body = "#datatype,string,long,string\n,result,table,msg\n,,0,\"a, \"\"b\"\"\nc\"\n";
        let recs = parse(body).unwrap();
        assert_eq!(recs[0].str("msg"), Some("a, \"b\"\nc"));
    }

    proptest! {
        #[test]
        fn never_panics(body in "[#a-z0-9,\"\r\n:._+-]{0,300}") {
            let _ = parse(&body);
        }

        #[test]
        fn never_panics_on_any_text(body in "\\PC{0,200}") {
            let _ = parse(&body);
        }
    }
}
