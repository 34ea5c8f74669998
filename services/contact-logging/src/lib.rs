//! contact-logging
