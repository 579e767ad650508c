#pragma once
// A call that must throw E (fattn::InvalidArgument, InvalidDType) with a
// message containing `fragment`: the tests' one way to pin an error.
#include <gtest/gtest.h>

#include <string>

template <class E, class F>
void expect_error(F&& call, const std::string& fragment) {
  try {
    call();
    FAIL() << "expected an error mentioning '" << fragment << "'";
  } catch (const E& e) {
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
  }
}
