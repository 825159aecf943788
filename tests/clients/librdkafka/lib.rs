// Empty: this package only pins rdkafka-sys's librdkafka source.
