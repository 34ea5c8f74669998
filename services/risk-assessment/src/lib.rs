//! risk-assessment
