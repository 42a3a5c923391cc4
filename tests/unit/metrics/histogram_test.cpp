#include "metrics/histogram.h"

#include <doctest/doctest.h>

#include <limits>
#include <stdexcept>
#include <vector>

using txmq::metrics::Histogram;

TEST_CASE("exponential_buckets multiplies from start by factor") {
  CHECK(txmq::metrics::exponential_buckets(0.001, 10, 4) ==
        std::vector<double>{0.001, 0.01, 0.1, 1});
  CHECK(txmq::metrics::exponential_buckets(1, 2, 5) == std::vector<double>{1, 2, 4, 8, 16});
}

TEST_CASE("exponential_buckets rejects a start, factor or count that cannot make buckets") {
  using txmq::metrics::exponential_buckets;
  CHECK_THROWS_AS(exponential_buckets(0, 2, 4), std::invalid_argument);
  CHECK_THROWS_AS(exponential_buckets(1, 1, 4), std::invalid_argument);
  CHECK_THROWS_AS(exponential_buckets(1, 2, 0), std::invalid_argument);
  CHECK_THROWS_AS(exponential_buckets(1, 2, Histogram::kMaxBuckets + 1), std::invalid_argument);
  CHECK_THROWS_AS(exponential_buckets(1, 1e300, 3), std::invalid_argument);  // overflows
}

TEST_CASE("default buckets are valid and increasing") {
  CHECK_NOTHROW(txmq::metrics::validate_buckets(txmq::metrics::default_buckets()));
}

TEST_CASE("bounds that are unsorted, repeated, infinite or too many are rejected") {
  using txmq::metrics::validate_buckets;
  CHECK_THROWS_AS(validate_buckets(std::vector<double>{2, 1}), std::invalid_argument);
  CHECK_THROWS_AS(validate_buckets(std::vector<double>{1, 1}), std::invalid_argument);
  CHECK_THROWS_AS(validate_buckets(std::vector<double>{1, std::numeric_limits<double>::infinity()}),
                  std::invalid_argument);
  CHECK_THROWS_AS(validate_buckets(std::vector<double>{std::numeric_limits<double>::quiet_NaN()}),
                  std::invalid_argument);
  CHECK_THROWS_AS(validate_buckets(std::vector<double>(Histogram::kMaxBuckets + 1, 0)),
                  std::invalid_argument);
  CHECK_NOTHROW(validate_buckets(std::vector<double>{}));
}

TEST_CASE("observe counts a value in the first bucket whose bound is at least the value") {
  const std::vector<double> bounds{1, 2};
  Histogram histogram(bounds);
  histogram.observe(-5);
  histogram.observe(1);
  histogram.observe(1.5);
  histogram.observe(2.5);
  CHECK(histogram.bucket_count(0) == 2);
  CHECK(histogram.bucket_count(1) == 1);
  CHECK(histogram.bucket_count(2) == 1);
  CHECK(histogram.sum() == 0);
}

TEST_CASE("a NaN observation lands in the +Inf bucket") {
  const std::vector<double> bounds{1, 2};
  Histogram histogram(bounds);
  histogram.observe(std::numeric_limits<double>::quiet_NaN());
  CHECK(histogram.bucket_count(0) == 0);
  CHECK(histogram.bucket_count(2) == 1);
}
