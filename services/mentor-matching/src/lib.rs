//! mentor-matching
