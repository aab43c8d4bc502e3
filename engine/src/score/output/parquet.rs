//! The predictions as Apache Parquet: row groups of [`ROW_GROUP_ROWS`]
//! rows, each written as soon as it is complete (memory stays a row group's
//! worth whatever the file size), zstd-compressed. Row groups are cut by row
//! count, not where the reader happened to cut chunks, so one input gives
//! the same bytes however it was read: the rule that identical bytes decide
//! which writer committed holds for Parquet as for CSV. Columns: the input's as read (CSV fields are text:
//! `String`, an empty field null), `probability` float64, `prediction`
//! int64, `explanation` string if asked for, and the provenance columns
//! (`source_uri` string, `source_generation` int64, `row_number` int64,
//! `model_version` string, `scored_at` timestamp in microseconds, UTC).

use std::io::Write;

use polars::io::parquet::write::BatchedWriter;
use polars::prelude::*;

use super::fields::Fields;
use super::{Provenance, Scored, Shape, Sink, unique_names};
use crate::score::ScoreError;

/// Rows per row group (the last may hold fewer).
pub const ROW_GROUP_ROWS: usize = 65_536;

pub struct ParquetSink<'w> {
    /// Rows not yet written, fewer than a row group.
    pending: Option<DataFrame>,
    writer: BatchedWriter<&'w mut (dyn Write + Send)>,
    fields: Fields,
    input_names: Vec<PlSmallStr>,
    /// Appended columns' names: probability, prediction, [explanation],
    /// [provenance...].
    appended: Vec<PlSmallStr>,
    provenance: Option<Provenance>,
    /// The schema has an `explanation` column.
    explain: bool,
    schema: Schema,
}

/// `scored_at`: microseconds, UTC (BigQuery reads it as a TIMESTAMP).
fn scored_at_type() -> DataType {
    DataType::Datetime(TimeUnit::Microseconds, Some(TimeZone::UTC))
}

impl<'w> ParquetSink<'w> {
    pub fn new(
        shape: &Shape<'_>,
        explain: bool,
        provenance: Option<Provenance>,
        out: &'w mut (dyn Write + Send),
    ) -> Result<ParquetSink<'w>, ScoreError> {
        let input_names: Vec<PlSmallStr> = unique_names(shape.columns).into_iter().map(PlSmallStr::from).collect();
        let appended: Vec<PlSmallStr> = shape
            .output_columns
            .iter()
            .map(|n| PlSmallStr::from(n.as_str()))
            .collect();
        let mut types = vec![DataType::Float64, DataType::Int64];
        if explain {
            types.push(DataType::String);
        }
        if provenance.is_some() {
            types.extend([
                DataType::String,
                DataType::Int64,
                DataType::Int64,
                DataType::String,
                scored_at_type(),
            ]);
        }
        let schema: Schema = input_names
            .iter()
            .map(|n| Field::new(n.clone(), DataType::String))
            .chain(appended.iter().zip(types).map(|(n, t)| Field::new(n.clone(), t)))
            .collect();
        let writer = ParquetWriter::new(out)
            .with_compression(ParquetCompression::Zstd(None))
            .with_statistics(StatisticsOptions::default())
            .batched(&schema)?;
        Ok(ParquetSink {
            pending: None,
            writer,
            fields: Fields::new(shape.json_lines, shape.delimiter, shape.columns),
            input_names,
            appended,
            provenance,
            explain,
            schema,
        })
    }
}

impl ParquetSink<'_> {
    fn write_group(&mut self, mut group: DataFrame) -> Result<(), ScoreError> {
        // The writer takes each column as one piece.
        group.rechunk_mut();
        self.writer.write_batch(&group)?;
        Ok(())
    }
}

impl Sink for ParquetSink<'_> {
    fn rows(&mut self, scored: &Scored) -> Result<(), ScoreError> {
        let n = scored.rows.len();
        let mut builders: Vec<StringChunkedBuilder> = self
            .input_names
            .iter()
            .map(|name| StringChunkedBuilder::new(name.clone(), n))
            .collect();
        for row in &scored.rows {
            self.fields.split(&scored.bytes[row.start..row.end]);
            for (i, builder) in builders.iter_mut().enumerate() {
                match self.fields.get(i) {
                    Some(value) if !value.is_empty() => builder.append_value(&*value),
                    _ => builder.append_null(),
                }
            }
        }
        let mut columns: Vec<Column> = builders.into_iter().map(|b| b.finish().into_column()).collect();
        let mut names = self.appended.iter().cloned();
        let mut name = || names.next().unwrap_or_default();
        columns.push(Column::new(
            name(),
            scored.rows.iter().map(|r| r.probability).collect::<Vec<f64>>(),
        ));
        columns.push(Column::new(
            name(),
            scored
                .rows
                .iter()
                .map(|r| i64::from(r.prediction))
                .collect::<Vec<i64>>(),
        ));
        if self.explain {
            columns.push(Column::new(
                name(),
                scored
                    .rows
                    .iter()
                    .map(|r| r.explanation.as_deref())
                    .collect::<Vec<Option<&str>>>(),
            ));
        }
        if let Some(p) = &self.provenance {
            columns.push(Column::new_scalar(
                name(),
                Scalar::from(PlSmallStr::from(p.source_uri.as_str())),
                n,
            ));
            columns.push(Column::new_scalar(name(), Scalar::from(p.source_generation), n));
            let rows: Vec<Option<i64>> = scored
                .rows
                .iter()
                .map(|r| p.row_numbers.then_some(r.row as i64))
                .collect();
            columns.push(Column::new(name(), rows));
            columns.push(Column::new_scalar(
                name(),
                Scalar::from(PlSmallStr::from(p.model_version.as_str())),
                n,
            ));
            let at = Column::new_scalar(name(), Scalar::from(p.scored_at_micros), n).cast(&scored_at_type())?;
            columns.push(at);
        }
        let frame = DataFrame::new(n, columns)?;
        debug_assert_eq!(frame.schema().len(), self.schema.len());
        let mut pending = match self.pending.take() {
            Some(mut pending) => {
                pending.vstack_mut_owned(frame)?;
                pending
            }
            None => frame,
        };
        while pending.height() >= ROW_GROUP_ROWS {
            let group = pending.slice(0, ROW_GROUP_ROWS);
            self.write_group(group)?;
            pending = pending.slice(ROW_GROUP_ROWS as i64, pending.height() - ROW_GROUP_ROWS);
        }
        self.pending = Some(pending);
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<(), ScoreError> {
        if let Some(rest) = self.pending.take()
            && rest.height() > 0
        {
            self.write_group(rest)?;
        }
        self.writer.finish()?;
        Ok(())
    }
}
