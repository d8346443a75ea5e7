package dev.bindery.interop;

import java.util.Map;
import java.util.function.BiFunction;

import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.ByteArraySerializer;
import org.springframework.beans.factory.annotation.Value;
import org.springframework.boot.autoconfigure.condition.ConditionalOnProperty;
import org.springframework.cloud.stream.binder.BinderCustomizer;
import org.springframework.cloud.stream.binder.kafka.KafkaMessageChannelBinder;
import org.springframework.cloud.stream.binder.kafka.ListenerContainerWithDlqAndRetryCustomizer;
import org.springframework.context.annotation.Bean;
import org.springframework.context.annotation.Configuration;
import org.springframework.kafka.core.DefaultKafkaProducerFactory;
import org.springframework.kafka.core.KafkaTemplate;
import org.springframework.kafka.listener.AbstractMessageListenerContainer;
import org.springframework.kafka.listener.DeadLetterPublishingRecoverer;
import org.springframework.kafka.listener.DefaultErrorHandler;
import org.springframework.util.backoff.BackOff;
import org.springframework.util.backoff.FixedBackOff;

/**
 * With {@code interop.kafka.spring-kafka-dlt=true}, dead letters of Kafka
 * bindings are written by spring-kafka's own {@link DeadLetterPublishingRecoverer}
 * (what {@code @RetryableTopic} and plain {@code @KafkaListener} apps use),
 * not by the Spring Cloud Stream binder: the binder hands retry and DLQ to
 * the listener container, as its reference describes for
 * {@link ListenerContainerWithDlqAndRetryCustomizer}. The dead letters then
 * carry spring-kafka's {@code kafka_dlt-*} headers instead of the binder's
 * {@code x-original-*} ones, on the binding's DLQ topic
 * ({@code error.<destination>.<group>} with {@code enableDlq}). The binder
 * hands over only bindings with retries ({@code maxAttempts} above 1).
 */
@Configuration
@ConditionalOnProperty("interop.kafka.spring-kafka-dlt")
public class SpringKafkaDeadLetters {

	@Bean
	public ListenerContainerWithDlqAndRetryCustomizer springKafkaDeadLetterPublishing(
			@Value("${spring.cloud.stream.kafka.binder.brokers}") String brokers) {
		KafkaTemplate<byte[], byte[]> template = new KafkaTemplate<>(new DefaultKafkaProducerFactory<byte[], byte[]>(
				Map.of(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, brokers,
						ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class,
						ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class)));
		return new ListenerContainerWithDlqAndRetryCustomizer() {

			@Override
			public void configure(AbstractMessageListenerContainer<?, ?> container, String destinationName,
					String group, BiFunction<ConsumerRecord<?, ?>, Exception, TopicPartition> dlqDestinationResolver,
					BackOff backOff) {
				DeadLetterPublishingRecoverer recoverer = dlqDestinationResolver == null
						? new DeadLetterPublishingRecoverer(template)
						: new DeadLetterPublishingRecoverer(template, dlqDestinationResolver);
				container.setCommonErrorHandler(
						new DefaultErrorHandler(recoverer, backOff == null ? new FixedBackOff(0, 0) : backOff));
				// Tells the test the container, not the binder, dead-letters here.
				System.out.println("INTEROP {\"event\":\"spring-kafka-dlt\",\"destination\":\"" + destinationName + "\"}");
				System.out.flush();
			}

			@Override
			public boolean retryAndDlqInBinding(String destinationName, String group) {
				return false;
			}
		};
	}

	/** The app has two binders; the customizer reaches the Kafka one's child context this way. */
	@Bean
	public BinderCustomizer kafkaContainerCustomizer(ListenerContainerWithDlqAndRetryCustomizer customizer) {
		return (binder, binderName) -> {
			if (binder instanceof KafkaMessageChannelBinder kafka) {
				kafka.setContainerCustomizer(customizer);
			}
		};
	}
}
